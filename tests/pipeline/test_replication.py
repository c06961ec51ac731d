"""Replication (3-2-1) on real targets: S3 (SeaweedFS) and Azure Blob (Azurite)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from sqlalchemy import select

from shared.db.models import Alert, Replication
from shared.repo import LocalBackend, Repository, read_disk
from shared.repo.backends.azure import AzureBackend
from shared.repo.backends.s3 import S3Backend
from shared.repo.digests import read_sums
from tests.pipeline.conftest import Pipeline
from tests.plugins.azurite import AzuriteServer
from tests.plugins.s3 import S3Server


async def wait_replications(p: Pipeline, rp_id: str, count: int, timeout: float = 60) -> list[Replication]:
    """The restore point's replications, once `count` of them exist and none is running."""
    deadline = time.monotonic() + timeout
    while True:
        with p.sessions() as s:
            reps = list(s.scalars(select(Replication).where(Replication.restore_point_id == rp_id)))
        if len(reps) == count and all(
            r.state == "done" or (r.state == "pending" and r.next_try_at) for r in reps
        ):
            return reps
        assert time.monotonic() < deadline, ([(r.target, r.state, r.error) for r in reps], p.logs())
        await asyncio.sleep(0.2)


def object_store_env(s3: S3Server, azurite: AzuriteServer) -> dict[str, str]:
    return {
        "VBM_S3__ACCESS_KEY": s3.access_key,
        "VBM_S3__SECRET_KEY": s3.secret_key,
        "VBM_AZURE__ACCOUNT_KEY": azurite.key,
    }


async def test_full_and_incremental_are_copied_to_s3_and_azure_sending_only_new_chunks(
    pipeline_factory: Callable[..., Pipeline],
    s3_server: S3Server,
    s3_bucket: str,
    azurite_server: AzuriteServer,
    azure_container: str,
) -> None:
    p = pipeline_factory(**object_store_env(s3_server, azurite_server))
    s3 = f"s3://{s3_server.endpoint}/{s3_bucket}/copy?tls=false"
    azure = f"azure://{azurite_server.account}/{azure_container}/copy?endpoint={azurite_server.endpoint}"
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("offsite", ["web"], options={"replicate_to": [s3, azure]})
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (full,) = p.restore_points(run)
    reps = await wait_replications(p, full.id, 2)
    primary = await Repository.open(LocalBackend(p.repo_dir))
    rp = await primary.load(full.id)
    assert {r.target: (r.state, r.chunks_sent) for r in reps} == {
        s3: ("done", len(rp.chunk_ids())),
        azure: ("done", len(rp.chunk_ids())),
    }

    p.lab.guest_write("web", 2000, 5 * 1024 * 1024, b"changed after the full" * 100)  # one window
    later = p.guest_disk("web", 2000)
    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    (incr,) = p.restore_points(run2)
    reps = await wait_replications(p, incr.id, 2)
    new = (await primary.load(incr.id)).chunk_ids() - rp.chunk_ids()
    assert len(new) == 1
    (cid,) = new
    stored = len(await primary.backend.get(f"chunks/{cid[:2]}/{cid}"))
    assert {r.target: (r.state, r.chunks_sent, r.bytes_sent) for r in reps} == {
        s3: ("done", 1, stored),
        azure: ("done", 1, stored),
    }  # only the new chunk crossed, to each target

    for backend in (
        S3Backend(s3, s3_server.access_key, s3_server.secret_key),
        AzureBackend(azure, azurite_server.key),
    ):
        copy = await Repository.open(backend)
        assert sorted(await copy.restore_point_ids()) == sorted([full.id, incr.id])
        point = await copy.load(incr.id)
        assert b"".join([x async for x in read_disk(copy, point, point.disk(2000))]) == later
        for rp_id in (full.id, incr.id):  # the SHA-256 of the disks came along (manifest.json)
            assert await read_sums(copy, rp_id) == await read_sums(primary, rp_id) is not None
        await backend.close()
    p.assert_clean()


async def test_a_target_that_refuses_writes_alerts_and_leaves_the_backup_alone(
    pipeline_factory: Callable[..., Pipeline], s3_server: S3Server, azurite_server: AzuriteServer
) -> None:
    p = pipeline_factory(**object_store_env(s3_server, azurite_server))
    refusing = f"s3://{s3_server.endpoint}/vbm-no-such-bucket/copy?tls=false"
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("offsite", ["web"], options={"replicate_to": [refusing]})
    content = p.guest_disk("web", 2000)
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)  # the backup is fine
    (rp,) = p.restore_points(run)
    (rep,) = await wait_replications(p, rp.id, 1)
    assert rep.state == "pending" and rep.attempts == 1 and rep.next_try_at is not None  # retried later
    assert "bucket vbm-no-such-bucket does not exist" in (rep.error or "")
    with p.sessions() as s:
        alerts = list(s.scalars(select(Alert).where(Alert.kind == "replication_failed")))
    assert len(alerts) == 1 and rp.id in alerts[0].message and refusing in alerts[0].message
    assert "The backup itself is fine" in alerts[0].message
    assert rp.verify_state == "ok" and await p.read_back(rp.id, 2000) == content
    out, err, code = await p.cli("backups", "copies", "--restore-point", rp.id)
    assert code == 0, err  # pending: not given up yet
    lines = out.splitlines()
    assert lines[1].split()[:3] == [rp.id, "pending", "1"] and lines[1].endswith(refusing), out
    assert "last error:" in lines[2] and "bucket vbm-no-such-bucket does not exist" in lines[2]
    assert "1 of 1 copies" in err
    p.assert_clean()


async def test_a_mover_killed_mid_copy_is_taken_over_and_nothing_is_sent_twice(
    pipeline_factory: Callable[..., Pipeline],
    s3_server: S3Server,
    s3_bucket: str,
    azurite_server: AzuriteServer,
) -> None:
    p = pipeline_factory(
        VBM_PIPELINE__ACK_WAIT="2",
        VBM_REPLICATION__BANDWIDTH_MBPS="16",  # 2 MB/s: the copy takes seconds
        **object_store_env(s3_server, azurite_server),
    )
    s3 = f"s3://{s3_server.endpoint}/{s3_bucket}/copy?tls=false"
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("offsite", ["web"], options={"replicate_to": [s3]})
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (rp,) = p.restore_points(run)
    client = s3_server.client()

    def on_target() -> int:
        return sum(1 for _ in client.list_objects(s3_bucket, prefix="copy/chunks/", recursive=True))

    deadline = time.monotonic() + 30
    while on_target() == 0:
        assert time.monotonic() < deadline, p.logs()
        await asyncio.sleep(0.05)
    p.procs["mover"].kill()  # mid-copy: some chunks there, no manifest
    # a PUT the server had whole when the mover died still lands: count once the target is still
    partial, steady = on_target(), time.monotonic()
    while time.monotonic() - steady < 1.0:
        await asyncio.sleep(0.1)
        if (now := on_target()) != partial:
            partial, steady = now, time.monotonic()
    p.procs["mover"].start()
    (rep,) = await wait_replications(p, rp.id, 1)
    primary = await Repository.open(LocalBackend(p.repo_dir))
    wanted = (await primary.load(rp.id)).chunk_ids()
    assert rep.state == "done" and rep.attempts == 2, (rep.state, rep.attempts, rep.error)
    assert on_target() == len(wanted) and partial < len(wanted)
    assert rep.chunks_sent == len(wanted) - partial  # the second attempt sent only what was missing
    copy = await Repository.open(S3Backend(s3, s3_server.access_key, s3_server.secret_key))
    assert (await copy.load(rp.id)).chunk_ids() == wanted
    p.assert_clean()


async def test_copies_follow_retention_and_gc_reclaims_the_secondary(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory()
    secondary = p.repo_dir.parent / "secondary"
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job(
        "keep1", ["web"], retention={"keep_last": 1}, options={"replicate_to": [str(secondary)]}
    )
    run1 = await p.run_job(job)
    assert (await p.wait_run(run1)).state == "succeeded", p.dump(run1)
    (rp1,) = p.restore_points(run1)
    await wait_replications(p, rp1.id, 1)
    copy = await Repository.open(LocalBackend(secondary))
    ids1 = (await copy.load(rp1.id)).chunk_ids()

    p.lab.guest_write("web", 2000, 0, b"new data in the first window" * 1000)
    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    (rp2,) = p.restore_points(run2)
    await wait_replications(p, rp2.id, 1)
    # the prune after rp2's verify, or at the latest this one, removes rp1 and then its copy
    out, err, code = await p.cli("prune")
    assert code == 0, err
    assert await copy.restore_point_ids() == [rp2.id]
    with p.sessions() as s:
        assert [r.restore_point_id for r in s.scalars(select(Replication))] == [rp2.id]

    only1 = ids1 - (await copy.load(rp2.id)).chunk_ids()
    assert only1
    old = time.time() - 900  # as if the GC ran a quarter of an hour later
    for f in (secondary / "chunks").rglob("*"):
        os.utime(f, (old, old))
    out, err, code = await p.cli("gc")
    assert code == 0, err
    assert f"{secondary}: 1 restore points, " in out and f"freed {len(only1)} chunks" in out, out
    assert all(not (secondary / "chunks" / c[:2] / c).exists() for c in only1)
    p.assert_clean()
