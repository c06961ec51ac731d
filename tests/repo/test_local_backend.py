import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.repo import LocalBackend, Repository, StorageFull, Writer, check, read_disk, restore_point
from shared.repo.backend import aside_name
from shared.repo.gc import collect
from shared.repo.repository import chunk_key
from tests.repo.conftest import BytesSource, make_image
from tests.repo.contract import BackendContract, LeftoverContract


class TestLocalContract(BackendContract, LeftoverContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> LocalBackend:
        return LocalBackend(tmp_path / "store")


async def test_crash_leftovers_are_invisible_and_an_empty_object_is_replaced(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path)
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / ".tmp-123").write_bytes(b"half")
    (tmp_path / "k" / "obj").write_bytes(b"")  # what a power cut after link can leave
    assert [i.key async for i in b.list("k/")] == ["k/obj"]
    assert await b.put_if_absent("k/obj", b"whole")
    assert await b.get("k/obj") == b"whole"


async def test_disk_full_is_clear_and_leaves_nothing(small_fs: Path) -> None:
    b = LocalBackend(small_fs)
    big = os.urandom(1024 * 1024)
    with pytest.raises(StorageFull, match="no space left"):
        for i in range(64):
            await b.put_if_absent(f"x/{i}", big)
    assert all([i.size == len(big) async for i in b.list("x/")])
    assert not [p for p in (small_fs / "x").iterdir() if p.name.startswith(".tmp-")]


async def test_usage(tmp_path: Path) -> None:
    total, free = await LocalBackend(tmp_path).usage()
    assert total and free is not None and 0 <= free <= total


async def test_delete_if_unused_since_spares_what_was_refreshed(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = [1_000_000.0]
    backend = LocalBackend(tmp_path, clock=lambda: now[0])
    await backend.put_if_absent("chunks/aa/old", b"x" * 10)
    cutoff = datetime.fromtimestamp(now[0] + 50, UTC)
    now[0] += 100
    await backend.put_if_absent("chunks/aa/young", b"y" * 10)
    assert await backend.delete_if_unused_since("chunks/aa/young", cutoff) is None
    assert await backend.exists("chunks/aa/young")
    assert await backend.exists("chunks/aa/old")  # a writer relies on it: refreshed now
    assert await backend.delete_if_unused_since("chunks/aa/old", cutoff) is None
    now[0] += 1000
    assert await backend.delete_if_unused_since("chunks/aa/old", datetime.fromtimestamp(now[0], UTC)) == 10
    assert not await backend.exists("chunks/aa/old")
    assert await backend.delete_if_unused_since("chunks/aa/gone", cutoff) is None
    assert [o.key for o in [x async for x in backend.list("chunks/")]] == ["chunks/aa/young"]


async def test_gc_puts_back_a_chunk_a_dead_gc_left_aside_and_removes_dead_writes(tmp_path: Path) -> None:
    repo = await Repository.init(LocalBackend(tmp_path / "r"), chunk_size=64 * 1024)
    writer = Writer(repo)
    data = make_image(4 * 64 * 1024, seed=5)
    try:
        disk, _ = await writer.write_disk(
            BytesSource(data), key=2000, capacity=len(data), file="w/w-flat.vmdk"
        )
    finally:
        writer.close()
    now = datetime.now(UTC)
    rp = restore_point(vm_name="w", started=now, finished=now, disks=[disk])
    await repo.commit(rp)
    victim = sorted(rp.chunk_ids())[0]
    path = tmp_path / "r" / chunk_key(victim)
    os.rename(path, path.parent / aside_name(victim))  # a GC killed between its move and its decision
    (path.parent / ".tmp-0badc0de").write_bytes(b"a write killed half-way")
    old = time.time() - 3600
    os.utime(path.parent / ".tmp-0badc0de", (old, old))
    assert not (await check(repo)).ok

    report = await collect(repo, cutoff=now - timedelta(minutes=5))
    assert (report.chunks_put_back, report.leftovers_removed, report.chunks_removed) == (1, 1, 0)
    assert (await check(repo, read_data=1.0)).ok
    assert b"".join([x async for x in read_disk(repo, rp, rp.disk(2000))]) == data
    assert not [p for p in (tmp_path / "r").rglob(".tmp-*")]

    # a GC whose time is up stops before deleting anything more, and leaves no lock behind
    await repo.forget(rp.id)
    report = await collect(repo, cutoff=now + timedelta(minutes=5), stale_after=timedelta(0))
    assert report.stopped_early and report.chunks_removed == 0
    assert not (tmp_path / "r" / "locks" / "gc").exists()
    assert len(list((tmp_path / "r" / "chunks").rglob("*"))) > 1
    report = await collect(repo, cutoff=now + timedelta(minutes=5))
    assert not report.stopped_early and report.chunks_removed == len(rp.chunk_ids())


async def test_a_gc_that_was_taken_over_leaves_the_new_holders_lock(tmp_path: Path) -> None:
    from shared.repo import gc

    repo = await Repository.init(LocalBackend(tmp_path / "r"))
    now = datetime.now(UTC)
    await gc._lock(repo, now - timedelta(hours=7), timedelta(hours=6), "first")
    await gc._lock(repo, now, timedelta(hours=6), "second")  # the first looks dead: taken over
    with pytest.raises(gc.GCBusy, match="another garbage collection"):
        await gc._lock(repo, now, timedelta(hours=6), "third")
    await gc._unlock(repo, "first")  # the overrunning first ends: the lock is not its any more
    assert json.loads(await repo.backend.get(gc.LOCK_KEY))["token"] == "second"
    await gc._unlock(repo, "second")
    assert not await repo.backend.exists(gc.LOCK_KEY)


async def test_a_gc_whose_lock_write_was_retried_after_a_lost_answer_holds_it(tmp_path: Path) -> None:
    from shared.repo import gc

    repo = await Repository.init(LocalBackend(tmp_path / "r"))
    now = datetime.now(UTC)
    await gc._lock(repo, now, timedelta(hours=6), "mine")
    await gc._lock(repo, now, timedelta(hours=6), "mine")  # the retry finds its own lock: held
    with pytest.raises(gc.GCBusy):
        await gc._lock(repo, now, timedelta(hours=6), "another")
