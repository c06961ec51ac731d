"""Immutable restore points on S3 Object Lock (SeaweedFS): detection, retention on every object a
point needs, extension once per generation, deletes refused until the date, GC and prune waiting."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio.commonconfig import GOVERNANCE
from minio.error import S3Error
from minio.objectlockconfig import DAYS, ObjectLockConfig

from shared.repo import NotARepository, ObjectLocked, RepoError, Repository, Writer, read_disk, restore_point
from shared.repo.backends.s3 import S3Backend
from shared.repo.gc import collect
from shared.repo.manifest import DiskEntry
from shared.repo.repository import CONFIG_KEY, chunk_key, manifest_key
from tests.plugins.s3 import S3Server
from tests.repo.conftest import BytesSource, make_image
from tests.repo.test_cli_repo import failed, ok, vbm

CS = 64 * 1024


@pytest.fixture
def locked_bucket(s3_server: S3Server) -> Iterator[str]:
    """A bucket created with Object Lock (its locked objects outlive the test: the session's
    server and its data dir are thrown away at the end)."""
    name = f"vbm-lock-{uuid.uuid4().hex[:12]}"
    s3_server.client().make_bucket(name, object_lock=True)
    yield name


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def backend_for(server: S3Server, bucket: str, days: int = 1, **kw: object) -> S3Backend:
    location = f"s3://{server.endpoint}/{bucket}/repo?tls=false&immutable_days={days}"
    return S3Backend(location, server.access_key, server.secret_key, **kw)  # type: ignore[arg-type]


def retained(server: S3Server, bucket: str, key: str) -> datetime:
    r = server.client().get_object_retention(bucket, f"repo/{key}")
    assert r is not None and r.mode == "COMPLIANCE", key
    until = r.retain_until_date
    assert until is not None
    return until


async def backup(
    writer: Writer,
    data: bytes,
    clock: Clock,
    parent: tuple[str, DiskEntry] | None = None,
    changed: list[tuple[int, int]] | None = None,
) -> tuple[str, DiskEntry]:
    disk, _ = await writer.write_disk(
        BytesSource(data), key=2000, capacity=len(data), file="web/web-flat.vmdk",
        parent=parent[1] if parent else None, parent_id=parent[0] if parent else None, changed=changed,
    )  # fmt: skip
    rp = restore_point(
        vm_name="web",
        started=clock.now,
        finished=clock.now,
        disks=[disk],
        parent=parent[0] if parent else None,
    )
    committed = await writer.repo.commit(rp)
    assert committed.immutable_until is not None
    assert committed.immutable_until >= clock.now + timedelta(days=1)
    assert (await writer.repo.load(rp.id)).immutable_until == committed.immutable_until
    return rp.id, disk


async def test_a_bucket_without_object_lock_is_refused_and_info_says_what_it_offers(
    s3_server: S3Server, s3_bucket: str, locked_bucket: str
) -> None:
    with pytest.raises(RepoError, match=rf"immutable_days=30\), and bucket {s3_bucket} has no Object Lock"):
        await Repository.init(backend_for(s3_server, s3_bucket, days=30))
    assert not list(s3_server.client().list_objects(s3_bucket, recursive=True))  # nothing written

    plain = await backend_for(s3_server, s3_bucket, days=0).object_lock()
    assert plain["bucket_lock"] is False and plain["immutable_days"] == 0
    locked = await backend_for(s3_server, locked_bucket, days=7).object_lock()
    assert locked == {
        "immutable_days": 7, "mode": "COMPLIANCE", "bucket_lock": True, "default_retention": None,
        "detail": "bucket has Object Lock",
    }  # fmt: skip
    with pytest.raises(ValueError, match="immutable_days must be a whole number"):
        backend_for(s3_server, locked_bucket, days=-1)

    # a default retention would lock vbm's GC lock and pruned manifests too: refused, before writing
    defaulted = f"vbm-lock-{uuid.uuid4().hex[:12]}"
    s3_server.client().make_bucket(defaulted, object_lock=True)
    s3_server.client().set_object_lock_config(defaulted, ObjectLockConfig(GOVERNANCE, 1, DAYS))
    with pytest.raises(
        RepoError, match=r"has a default retention \(GOVERNANCE 1 Days\).*remove the bucket's"
    ):
        await Repository.init(backend_for(s3_server, defaulted, days=7))
    assert not list(s3_server.client().list_objects(defaulted, recursive=True))


async def test_every_object_of_a_point_is_immutable_and_deletes_wait_for_the_date(
    s3_server: S3Server, locked_bucket: str
) -> None:
    clock = Clock()
    b = backend_for(s3_server, locked_bucket, clock=clock)
    repo = await Repository.init(b, chunk_size=CS)
    writer = Writer(repo)
    try:
        rp_id, _ = await backup(writer, make_image(8 * CS, seed=1), clock)
    finally:
        writer.close()
    rp = await repo.load(rp_id)
    floor = clock.now + timedelta(days=1)
    keys = [chunk_key(c) for c in rp.chunk_ids()] + [manifest_key(rp_id), CONFIG_KEY]
    assert len(keys) > 3
    for key in keys:
        assert retained(s3_server, locked_bucket, key) >= floor

    client = s3_server.client()
    victim = f"repo/{chunk_key(sorted(rp.chunk_ids())[0])}"
    version = client.stat_object(locked_bucket, victim).version_id
    with pytest.raises(S3Error) as refused:  # what ransomware with the keys would try
        client.remove_object(locked_bucket, victim, version_id=version)
    assert refused.value.code == "AccessDenied"

    with pytest.raises(ObjectLocked, match=rf"object manifests/{rp_id} is immutable until 20"):
        await repo.forget(rp_id)
    assert await repo.restore_point_ids() == [rp_id]

    # an orphan written without retention goes for good (no version left behind); a locked
    # orphan waits for its date; the GC lock (never retained) is removed as always
    orphan, locked_orphan = chunk_key("ab" * 32), chunk_key("cd" * 32)
    client.put_object(locked_bucket, f"repo/{orphan}", io.BytesIO(b"x"), 1)
    await b.put_if_absent(locked_orphan, b"y")
    report = await collect(repo, cutoff=clock.now + timedelta(hours=1))
    assert report.removed == ["ab" * 32] and report.chunks_spared_young == 1
    assert [
        v.version_id
        for v in client.list_objects(locked_bucket, prefix=f"repo/{orphan}", include_version=True)
    ] == []
    assert not list(client.list_objects(locked_bucket, prefix="repo/locks/", include_version=True))
    assert await b.exists(locked_orphan)


async def test_reuse_within_a_generation_extends_nothing_and_a_new_generation_extends_all(
    s3_server: S3Server, locked_bucket: str
) -> None:
    clock = Clock()
    b = backend_for(s3_server, locked_bucket, clock=clock)  # 1 day: a generation is a day
    repo = await Repository.init(b, chunk_size=CS)
    writer = Writer(repo)
    data = bytearray(make_image(16 * CS, seed=2))
    try:
        first = await backup(writer, bytes(data), clock)
        before = b.retained
        data[3 * CS : 3 * CS + 10] = b"0123456789"
        second = await backup(writer, bytes(data), clock, parent=first, changed=[(3 * CS, 10)])
        assert b.retained == before  # the inherited windows hold their parent's date: no request

        clock.now += timedelta(days=1, seconds=1)  # the next generation
        data[5 * CS : 5 * CS + 10] = b"9876543210"
        third_id, third = await backup(writer, bytes(data), clock, parent=second, changed=[(5 * CS, 10)])
    finally:
        writer.close()
    inherited = third.chunk_ids() & first[1].chunk_ids()
    assert b.retained >= len(inherited) > 5
    want = b.lock_until(clock.now)
    assert want is not None
    for cid in third.chunk_ids():
        assert retained(s3_server, locked_bucket, chunk_key(cid)) == want
    assert retained(s3_server, locked_bucket, CONFIG_KEY) == want
    assert (await repo.load(third_id)).immutable_until == want


async def test_a_resumed_write_extends_every_chunk_it_names(s3_server: S3Server, locked_bucket: str) -> None:
    """Chunks a resumed incremental took from an earlier attempt's checkpoint were locked from that
    attempt's start, not this one's: the parent's date cannot vouch for them, so all are extended."""
    clock = Clock()
    b = backend_for(s3_server, locked_bucket, clock=clock)
    repo = await Repository.init(b, chunk_size=CS)
    writer = Writer(repo)
    data = bytearray(make_image(8 * CS, seed=3))
    try:
        first = await backup(writer, bytes(data), clock)
        data[CS : CS + 10] = b"0123456789"
        disk, _ = await writer.write_disk(
            BytesSource(bytes(data)), key=2000, capacity=len(data), file="web/web-flat.vmdk",
            parent=first[1], parent_id=first[0], changed=[(CS, 10)],
        )  # fmt: skip
        clock.now += timedelta(days=1, seconds=1)  # the retry runs in the next generation
        rp = restore_point(
            vm_name="web", started=clock.now, finished=clock.now, disks=[disk], parent=first[0]
        )
        committed = await repo.commit(rp, resumed=True)
    finally:
        writer.close()
    assert committed.immutable_until == b.lock_until(clock.now)
    for cid in disk.chunk_ids():  # the point's date holds for every chunk it names
        assert retained(s3_server, locked_bucket, chunk_key(cid)) >= committed.immutable_until


def test_locations_are_checked() -> None:
    with pytest.raises(ValueError, match="lock_mode must be compliance or governance"):
        S3Backend("s3://h/bkt?immutable_days=3&lock_mode=strict", "a", "s")
    b = S3Backend("s3://h/bkt?immutable_days=30&lock_mode=governance", "a", "s")
    assert b.where.lock_mode == "GOVERNANCE"
    until = b.lock_until(datetime(2026, 11, 26, 12, tzinfo=UTC))
    assert until is not None and until >= datetime(2026, 12, 26, 12, tzinfo=UTC)
    assert until.timestamp() % (10 * 86400) == 0  # generations of 10 days for long periods


async def test_deletes_by_someone_with_the_keys_are_undone_with_repo_undelete(
    s3_server: S3Server, locked_bucket: str, tmp_path: Path
) -> None:
    clock = Clock()
    b = backend_for(s3_server, locked_bucket, clock=clock)
    repo = await Repository.init(b, chunk_size=CS)
    writer = Writer(repo)
    data = make_image(6 * CS, seed=3)
    try:
        rp_id, _ = await backup(writer, data, clock)
    finally:
        writer.close()
    client = s3_server.client()
    names = [str(o.object_name) for o in client.list_objects(locked_bucket, prefix="repo/", recursive=True)]
    for name in names:  # what an attacker with the keys can do: hide every object behind a marker
        client.remove_object(locked_bucket, name)
    with pytest.raises(NotARepository):
        await Repository.open(backend_for(s3_server, locked_bucket))

    env = {"VBM_S3__ACCESS_KEY": s3_server.access_key, "VBM_S3__SECRET_KEY": s3_server.secret_key}
    location = b.location
    result = vbm(tmp_path, "undelete", repo=location, **env)
    assert f"{len(names)} object(s) brought back".encode() in result.stderr, result.stderr
    info = json.loads(ok(vbm(tmp_path, "info", repo=location, **env)))
    assert info["restore_points"] == 1 and info["object_lock"]["bucket_lock"] is True
    assert info["object_lock"]["immutable_days"] == 1
    again = await Repository.open(backend_for(s3_server, locked_bucket))
    point = await again.load(rp_id)
    assert b"".join([x async for x in read_disk(again, point, point.disk(2000))]) == data
    failed(vbm(tmp_path, "undelete", repo=tmp_path / "local"))
