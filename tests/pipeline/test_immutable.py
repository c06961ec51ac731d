"""The pipeline on an S3 bucket with Object Lock: every restore point is written immutable, retention
that would remove one before its date keeps it, and a bucket without Object Lock fails the run
saying so (snapshot removed); copies to a locked secondary are immutable there too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from minio.error import S3Error
from sqlalchemy import select

from shared.db.models import Replication, RestorePointRow
from shared.repo import Repository
from shared.repo.backends.s3 import S3Backend
from shared.repo.repository import CONFIG_KEY, chunk_key, manifest_key
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_faults import eventually
from tests.pipeline.test_replication import wait_replications
from tests.plugins.s3 import S3Server


async def test_points_on_a_locked_bucket_are_immutable_and_outlive_retention_until_their_date(
    pipeline_factory: Callable[..., Pipeline], s3_server: S3Server
) -> None:
    bucket = f"vbm-lock-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.make_bucket(bucket, object_lock=True)  # its objects outlive the test, as they must
    p = pipeline_factory(VBM_S3__ACCESS_KEY=s3_server.access_key, VBM_S3__SECRET_KEY=s3_server.secret_key)
    location = f"s3://{s3_server.endpoint}/{bucket}/vbm?tls=false&immutable_days=1"
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("locked", ["web"], repository=location, retention={"keep_last": 1})

    run1 = await p.run_job(job)
    assert (await p.wait_run(run1)).state == "succeeded", p.dump(run1)
    (rp1,) = p.restore_points(run1)
    p.lab.guest_write("web", 2000, 0, b"after the first backup" * 100)
    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    (rp2,) = p.restore_points(run2)

    for _ in range(100):  # verified, then pruned: the first point is due, and immutable
        if "is due for removal" in p.logs():
            break
        await asyncio.sleep(0.1)
    assert f"restore point {rp1.id} is due for removal (no rule keeps it) and kept" in p.logs()
    with p.sessions() as s:
        assert s.get(RestorePointRow, rp1.id) is not None
        assert s.get(RestorePointRow, rp2.id).verify_state == "ok"  # type: ignore[union-attr]

    backend = S3Backend(location, s3_server.access_key, s3_server.secret_key)
    repo = await Repository.open(backend)
    assert await repo.restore_point_ids() == sorted([rp1.id, rp2.id])
    floor = datetime.now(UTC) + timedelta(hours=23)
    for rp_id in (rp1.id, rp2.id):
        rp = await repo.load(rp_id)
        assert rp.immutable_until is not None and rp.immutable_until >= floor
        for key in [manifest_key(rp_id), *(chunk_key(c) for c in rp.chunk_ids())]:
            r = client.get_object_retention(bucket, f"vbm/{key}")
            assert r is not None and r.retain_until_date is not None and r.retain_until_date >= floor, key
    some = f"vbm/{manifest_key(rp1.id)}"
    try:
        client.remove_object(bucket, some, version_id=client.stat_object(bucket, some).version_id)
        raise AssertionError("a locked manifest was deleted")
    except S3Error as exc:
        assert exc.code == "AccessDenied"
    await backend.close()
    p.assert_clean()


async def test_a_bucket_without_object_lock_fails_the_run_clearly_and_leaves_no_snapshot(
    pipeline_factory: Callable[..., Pipeline], s3_server: S3Server, s3_bucket: str
) -> None:
    p = pipeline_factory(VBM_S3__ACCESS_KEY=s3_server.access_key, VBM_S3__SECRET_KEY=s3_server.secret_key)
    location = f"s3://{s3_server.endpoint}/{s3_bucket}/vbm?tls=false&immutable_days=14"
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("unlocked", ["web"], repository=location)
    run = await p.run_job(job)
    done = await p.wait_run(run)
    assert done.state == "failed", p.dump(run)
    assert f"bucket {s3_bucket} has no Object Lock" in p.dump(run)
    assert p.restore_points(run) == []
    # the failed step's cleanup (the notifier) removes the snapshot right after the run ends
    await eventually(
        lambda: not p.open_ledger() and not p.lab.snapshots("web"),
        what="the snapshot of the failed run removed",
    )
    p.assert_clean()


async def test_copies_to_a_locked_bucket_are_immutable_and_outlive_retention(
    pipeline_factory: Callable[..., Pipeline], s3_server: S3Server
) -> None:
    bucket = f"vbm-lock-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.make_bucket(bucket, object_lock=True)
    p = pipeline_factory(VBM_S3__ACCESS_KEY=s3_server.access_key, VBM_S3__SECRET_KEY=s3_server.secret_key)
    offsite = f"s3://{s3_server.endpoint}/{bucket}/copy?tls=false&immutable_days=1"
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("offsite", ["web"], retention={"keep_last": 1}, options={"replicate_to": [offsite]})
    run1 = await p.run_job(job)
    assert (await p.wait_run(run1)).state == "succeeded", p.dump(run1)
    (rp1,) = p.restore_points(run1)
    await wait_replications(p, rp1.id, 1)
    p.lab.guest_write("web", 2000, 0, b"after the first backup" * 100)
    run2 = await p.run_job(job)
    assert (await p.wait_run(run2)).state == "succeeded", p.dump(run2)
    (rp2,) = p.restore_points(run2)
    await wait_replications(p, rp2.id, 1)

    _, err, code = await p.cli("prune")  # rp1 leaves the primary; its copy is immutable: it stays
    assert code == 0, err
    with p.sessions() as s:
        assert s.get(RestorePointRow, rp1.id) is None
        assert sorted(r.restore_point_id for r in s.scalars(select(Replication))) == sorted([rp1.id, rp2.id])
    copy = await Repository.open(S3Backend(offsite, s3_server.access_key, s3_server.secret_key))
    assert await copy.restore_point_ids() == sorted([rp1.id, rp2.id])
    floor = datetime.now(UTC) + timedelta(hours=23)
    for rp_id in (rp1.id, rp2.id):
        rp = await copy.load(rp_id)  # the copy says until when the secondary keeps it (its own date)
        assert rp.immutable_until is not None and rp.immutable_until >= floor
        for key in [CONFIG_KEY, manifest_key(rp_id), *(chunk_key(c) for c in rp.chunk_ids())]:
            r = client.get_object_retention(bucket, f"copy/{key}")
            assert r is not None and r.retain_until_date is not None, key
            assert r.retain_until_date >= rp.immutable_until - timedelta(seconds=1), key
    await copy.backend.close()
    p.assert_clean()
