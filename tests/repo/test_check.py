"""`check`: data-check slices, attribution of damage, damaged manifests, and a full disk."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.repo import LocalBackend, Repository, StorageFull, Writer, check, restore_point
from shared.repo.check import in_subset
from shared.repo.chunk import chunk_id
from shared.repo.repository import chunk_key, manifest_key
from tests.plugins.tmpfs import SmallFsFactory
from tests.repo.conftest import BytesSource, make_image, read_all

NOW = datetime(2026, 11, 26, tzinfo=UTC)
CS = 64 * 1024


async def full(writer: Writer, data: bytes, vm: str = "web") -> str:
    disk, _ = await writer.write_disk(BytesSource(data), key=2000, capacity=len(data), file=f"{vm}/disk")
    rp = restore_point(vm_name=vm, started=NOW, finished=NOW, disks=[disk])
    await writer.repo.commit(rp)
    return rp.id


async def incremental(writer: Writer, parent_id: str, data: bytes, changed: list[tuple[int, int]]) -> str:
    parent = await writer.repo.load(parent_id)
    disk, _ = await writer.write_disk(
        BytesSource(data),
        key=2000,
        capacity=len(data),
        file=parent.disks[0].file,
        parent=parent.disks[0],
        parent_id=parent_id,
        changed=changed,
    )
    rp = restore_point(vm_name=parent.vm_name, started=NOW, finished=NOW, disks=[disk], parent=parent_id)
    await writer.repo.commit(rp)
    return rp.id


def flip(path: Path, at: int = -1) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


def chunk_path(repo: Repository, cid: str) -> Path:
    return Path(repo.backend.location) / chunk_key(cid)


class Recorder:
    """Records which chunks `check` reads (wraps `Repository.get_chunk`)."""

    def __init__(self, repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
        self.read: list[str] = []
        original = repo.get_chunk

        async def get_chunk(chunk_id: str, restore_point: str | None = None) -> bytes:
            self.read.append(chunk_id)
            return await original(chunk_id, restore_point)

        monkeypatch.setattr(repo, "get_chunk", get_chunk)

    def take(self) -> set[str]:
        out = set(self.read)
        assert len(out) == len(self.read), "a chunk was read twice in one run"
        self.read.clear()
        return out


async def referenced(repo: Repository) -> set[str]:
    ids: set[str] = set()
    for rp_id in await repo.restore_point_ids():
        ids |= (await repo.load(rp_id)).chunk_ids()
    return ids


async def test_subset_slices_cover_every_chunk_exactly_once(
    repo: Repository, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in range(4):
        await full(writer, make_image(24 * CS + 1000, seed=100 + seed), vm=f"vm{seed}")
    everything = await referenced(repo)
    assert len(everything) > 40
    rec = Recorder(repo, monkeypatch)

    for fraction, starts in [(0.25, [0, 0.25, 0.5, 0.75]), (0.1, [k * 0.1 for k in range(10)])]:
        slices = []
        for start in starts:
            report = await check(repo, read_data=fraction, start=start)
            assert report.ok and report.chunks_referenced == len(everything)
            got = rec.take()
            assert report.chunks_read == len(got)
            slices.append(got)
        assert set().union(*slices) == everything
        assert sum(len(s) for s in slices) == len(everything), "slices overlap"

    # a slice wraps around the end of the id space: [0.9, 1) + [0, 0.15)
    report = await check(repo, read_data=0.25, start=0.9)
    wrapped = rec.take()
    assert wrapped == {
        c for c in everything if int(c[:8], 16) >= 0.9 * 2**32 or int(c[:8], 16) < 0.15 * 2**32
    }
    assert report.chunks_read == len(wrapped)
    # all, and none
    assert (await check(repo, read_data=1.0)).chunks_read == len(everything) == len(rec.take())
    assert (await check(repo)).chunks_read == 0 and not rec.take()

    # a damaged chunk is found by exactly the one slice that holds it
    victim = sorted(everything)[len(everything) // 2]
    flip(chunk_path(repo, victim))
    found = []
    for start in (0, 0.25, 0.5, 0.75):
        report = await check(repo, read_data=0.25, start=start)
        if not report.ok:
            assert set(report.damaged_chunks) == {victim}
            found.append(start)
    assert found == [int(victim[:8], 16) * 4 // 2**32 / 4]


def test_subset_boundaries() -> None:
    at = {pos: f"{pos:08x}" + "0" * 56 for pos in (0, 2**30 - 1, 2**30, 2**31, 2**32 - 1)}
    assert in_subset(at[0], 0, 0.25) and not in_subset(at[0], 0.25, 0.25)
    assert in_subset(at[2**30 - 1], 0, 0.25) and not in_subset(at[2**30 - 1], 0.25, 0.25)
    assert in_subset(at[2**30], 0.25, 0.25) and not in_subset(at[2**30], 0, 0.25)
    assert in_subset(at[2**32 - 1], 0.75, 0.25) and in_subset(at[2**32 - 1], 0.9, 0.25)
    assert in_subset(at[0], 0.9, 0.25) and not in_subset(at[2**31], 0.9, 0.25)
    assert in_subset(at[2**31], 1.5, 0.25), "start wraps modulo 1"
    assert all(in_subset(c, 0.3, 1.0) for c in at.values())
    assert not any(in_subset(c, 0.3, 0.0) for c in at.values())


async def test_one_damaged_shared_chunk_is_blamed_on_every_user(repo: Repository, writer: Writer) -> None:
    shared = random.Random(1).randbytes(CS)
    a = make_image(6 * CS, seed=11)
    a = a[: 2 * CS] + shared + a[3 * CS :]
    b = make_image(4 * CS + 99, seed=12)
    b = shared + b[CS:]
    a1 = await full(writer, a, vm="a")
    b1 = await full(writer, b, vm="b")
    a_next = bytearray(a)
    a_next[5 * CS : 5 * CS + 10] = b"0123456789"
    a2 = await incremental(writer, a1, bytes(a_next), [(5 * CS, 10)])  # inherits the shared window
    a3 = await incremental(
        writer, a2, bytes(a_next[: 2 * CS]) + bytes(CS) + bytes(a_next[3 * CS :]), [(2 * CS, CS)]
    )
    c1 = await full(writer, make_image(5 * CS, seed=13), vm="c")  # shares nothing
    victim = (await writer.repo.load(b1)).disks[0].chunks[0]
    assert isinstance(victim, str) and victim == chunk_id(shared)
    users = {a1, a2, b1}
    assert victim not in (await repo.load(a3)).chunk_ids() | (await repo.load(c1)).chunk_ids()

    flip(chunk_path(repo, victim), at=len(chunk_path(repo, victim).read_bytes()) // 2)
    assert (await check(repo)).ok, "a flipped bit is no structural damage"
    report = await check(repo, read_data=1.0)
    assert list(report.damaged_chunks) == [victim]
    assert "corrupt" in report.damaged_chunks[victim] or "decompress" in report.damaged_chunks[victim]
    assert set(report.damaged_restore_points) == users
    for rp_id in users:
        [problem] = report.damaged_restore_points[rp_id]
        assert victim in problem and chunk_key(victim) in problem
    for rp_id in (a3, c1):
        await read_all(repo, rp_id)

    chunk_path(repo, victim).unlink()
    quick = await check(repo)
    assert quick.damaged_chunks == {victim: "is missing"} and set(quick.damaged_restore_points) == users
    chunk_path(repo, victim).write_bytes(b"")
    quick = await check(repo)
    assert (
        quick.damaged_chunks == {victim: "is empty (0 bytes)"} and set(quick.damaged_restore_points) == users
    )

    # a full backup of the same content replaces the empty remnant: everyone is whole again
    await full(writer, b, vm="b")
    assert (await check(repo, read_data=1.0)).ok
    assert await read_all(repo, a1) == a and await read_all(repo, b1) == b


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
async def test_damaged_manifest_is_a_damaged_restore_point(
    repo: Repository, writer: Writer, damage: str
) -> None:
    good = await full(writer, make_image(4 * CS, seed=21), vm="good")
    bad = await full(writer, make_image(4 * CS, seed=22), vm="bad")
    path = Path(repo.backend.location) / manifest_key(bad)
    raw = path.read_bytes()
    if damage == "flip":
        flip(path, at=len(raw) // 2)
    elif damage == "truncate":
        path.write_bytes(raw[: len(raw) - 7])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"not a manifest at all")
    for read_data in (0.0, 1.0):
        report = await check(repo, read_data=read_data)
        assert not report.ok and report.restore_points == 2
        assert not report.damaged_chunks
        assert list(report.damaged_restore_points) == [bad]
        [problem] = report.damaged_restore_points[bad]
        assert bad in problem and ("checksum" in problem or "truncated or not a manifest" in problem)
    assert await read_all(repo, good) == make_image(4 * CS, seed=21)


def fill_up(folder: Path) -> Path:
    """Fill a filesystem to the last byte with one file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    if not fh.write(bytes(size)):
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    return filler


def tmp_files(root: Path) -> list[str]:
    return [n for _, _, files in os.walk(root) for n in files if n.startswith(".tmp-")]


async def no_tmp_files(root: Path) -> bool:
    """Workers cancelled by the failure may still be inside a write: give their threads a moment."""
    for _ in range(100):
        if not tmp_files(root):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_disk_full_during_backup(small_fs_factory: SmallFsFactory) -> None:
    root = small_fs_factory("8m") / "repo"
    repo = await Repository.init(LocalBackend(root), chunk_size=CS)
    writer = Writer(repo, workers=4)
    try:
        images = {
            await full(writer, make_image(12 * CS, seed=31 + i), vm=f"vm{i}"): make_image(
                12 * CS, seed=31 + i
            )
            for i in range(2)
        }
        huge = random.Random(3).randbytes(160 * CS)  # 10 MiB that do not compress
        with pytest.raises(StorageFull, match="no space left"):
            await full(writer, huge, vm="huge")
        assert await repo.restore_point_ids() == sorted(images)
        assert await no_tmp_files(root)
        for rp_id, data in images.items():
            assert await read_all(repo, rp_id) == data
        report = await check(repo, read_data=1.0)
        assert report.ok and report.restore_points == 2
    finally:
        writer.close()
        await repo.backend.close()


async def test_disk_full_when_the_manifest_is_written(small_fs_factory: SmallFsFactory) -> None:
    root = small_fs_factory("8m") / "repo"
    repo = await Repository.init(LocalBackend(root), chunk_size=CS)
    writer = Writer(repo, workers=4)
    try:
        first = make_image(12 * CS, seed=38)
        rp1 = await full(writer, first)
        small = make_image(3 * CS, seed=39)
        disk, _ = await writer.write_disk(BytesSource(small), key=1, capacity=len(small), file="s/disk")
        rp = restore_point(vm_name="s", started=NOW, finished=NOW, disks=[disk])
        filler = fill_up(root.parent)
        with pytest.raises(StorageFull):
            await repo.commit(rp)
        assert await repo.restore_point_ids() == [rp1]
        assert not tmp_files(root)
        assert (await check(repo, read_data=1.0)).ok
        filler.unlink()  # space again: the same restore point commits, and reads back
        await repo.commit(rp)
        assert await repo.restore_point_ids() == sorted([rp1, rp.id])
        assert await read_all(repo, rp.id) == small and await read_all(repo, rp1) == first
        assert (await check(repo, read_data=1.0)).ok
    finally:
        writer.close()
        await repo.backend.close()


async def test_no_inodes_left_is_storage_full(small_fs_factory: SmallFsFactory) -> None:
    """A full disk can refuse a new folder (chunks/xx/) as well as a file: StorageFull, not OSError."""
    fs = small_fs_factory("8m")
    root = fs / "repo"
    repo = await Repository.init(LocalBackend(root), chunk_size=CS)
    writer = Writer(repo, workers=2)
    try:
        first = make_image(4 * CS, seed=41)
        rp1 = await full(writer, first, vm="a")
        # windows whose chunks go to folders that do not exist yet, so the first failure is a mkdir
        rng = random.Random(4)
        fresh: list[bytes] = []
        while len(fresh) < 8:
            block = rng.randbytes(CS)
            if not (root / "chunks" / chunk_id(block)[:2]).exists():
                fresh.append(block)
        used = os.statvfs(fs).f_files - os.statvfs(fs).f_ffree
        remount = ["mount", "-o", f"remount,nr_inodes={used}", str(fs)]
        await asyncio.to_thread(subprocess.run, remount, check=True, timeout=30)
        with pytest.raises(StorageFull, match="no space left"):
            await full(writer, b"".join(fresh), vm="b")
        assert await repo.restore_point_ids() == [rp1]
        assert await read_all(repo, rp1) == first
        assert (await check(repo, read_data=1.0)).ok
    finally:
        writer.close()
        await repo.backend.close()
