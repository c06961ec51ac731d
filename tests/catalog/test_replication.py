"""Replication without a pipeline: a copy whose manifest is there already still checks and sends
every chunk; a copy whose last attempt went quiet is given up with an alert (no endless retries
holding back garbage collection)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from services.mover.replicate import Copied, copy_point
from shared.catalog import replication
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Alert, Replication
from shared.repo import LocalBackend, Repository, Writer, read_disk, restore_point
from shared.repo.locations import NO_CREDENTIALS
from shared.repo.repository import chunk_key
from tests.repo.conftest import BytesSource, make_image

CS = 64 * 1024


async def test_a_copy_with_its_manifest_there_but_a_chunk_missing_is_completed(tmp_path: Path) -> None:
    src = await Repository.init(LocalBackend(tmp_path / "primary"), chunk_size=CS)
    data = make_image(8 * CS, seed=5)
    writer = Writer(src)
    try:
        disk, _ = await writer.write_disk(
            BytesSource(data), key=2000, capacity=len(data), file="web/web-flat.vmdk"
        )
    finally:
        writer.close()
    rp = restore_point(vm_name="web", started=datetime.now(UTC), finished=datetime.now(UTC), disks=[disk])
    await src.commit(rp)
    target = str(tmp_path / "secondary")
    first = Copied()
    await copy_point(str(tmp_path / "primary"), target, rp.id, first, NO_CREDENTIALS)
    assert first.chunks == len(disk.chunk_ids()) >= 3

    lost = sorted(disk.chunk_ids())[1]  # a chunk gone from the secondary, its manifest still there
    (tmp_path / "secondary" / chunk_key(lost)).unlink()
    again = Copied()
    await copy_point(str(tmp_path / "primary"), target, rp.id, again, NO_CREDENTIALS)
    assert (again.chunks, again.present) == (1, len(disk.chunk_ids()) - 1)
    dst = await Repository.open(LocalBackend(tmp_path / "secondary"))
    copy = await dst.load(rp.id)
    assert b"".join([p async for p in read_disk(dst, copy, copy.disk(2000))]) == data


def test_a_copy_whose_last_attempt_went_quiet_is_given_up_with_an_alert(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vbm.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    now = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
    old = now - timedelta(hours=1)
    with sessions.begin() as s:
        for rep_id, attempts in (("rep-a", replication.MAX_ATTEMPTS), ("rep-b", 2)):
            s.add(
                Replication(
                    id=rep_id, restore_point_id=f"rp-{rep_id}", target="s3://x/b", state="running",
                    attempts=attempts, chunks_sent=0, bytes_sent=0, created_at=old, updated_at=old,
                )
            )  # fmt: skip
    with sessions.begin() as s:
        assert replication.due(s, now, timedelta(minutes=5)) == 1  # rep-b is tried again
    with sessions() as s:
        a, b = s.get(Replication, "rep-a"), s.get(Replication, "rep-b")
        assert a is not None and b is not None
        assert (a.state, b.state) == ("failed", "pending")
        n = replication.MAX_ATTEMPTS
        assert a.error == f"attempt {n} of {n} stopped answering (its mover died or hung)"
        [alert] = s.scalars(select(Alert))
        assert (
            alert.kind == "replication_failed" and "rp-rep-a could not be copied to s3://x/b" in alert.message
        )
    engine.dispose()
