"""Restore points: full, incremental, dedup, zero windows, reads, format errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.repo import (
    ChunkError,
    LocalBackend,
    ManifestError,
    NotARepository,
    Repository,
    UnsupportedVersion,
    Writer,
    read_disk,
    restore_point,
)
from shared.repo.repository import chunk_key
from tests.repo.conftest import BytesSource, make_image, read_all

NOW = datetime(2026, 11, 26, tzinfo=UTC)
CS = 64 * 1024


async def full(writer: Writer, data: bytes, key: int = 2000, vm: str = "web") -> str:
    disk, _ = await writer.write_disk(
        BytesSource(data), key=key, capacity=len(data), file=f"{vm}/{vm}-flat.vmdk"
    )
    rp = restore_point(vm_name=vm, started=NOW, finished=NOW, disks=[disk])
    await writer.repo.commit(rp)
    return rp.id


async def chunk_objects(repo: Repository) -> list[str]:
    return [i.key async for i in repo.backend.list("chunks/")]


async def test_full_reads_back_byte_identical(repo: Repository, writer: Writer) -> None:
    data = make_image(40 * CS + 3 * 1024, seed=1)  # not a multiple of the chunk size
    rp_id = await full(writer, data)
    assert await read_all(repo, rp_id) == data


async def test_zero_windows_take_no_space(repo: Repository, writer: Writer) -> None:
    data = bytes(30 * CS) + b"x" * CS + bytes(CS // 2)
    rp_id = await full(writer, data)
    rp = await repo.load(rp_id)
    assert rp.disks[0].chunks == (30, rp.disks[0].chunks[1], 1)
    assert len(await chunk_objects(repo)) == 1
    assert await read_all(repo, rp_id) == data


async def test_dedup_across_disks_vms_and_runs(repo: Repository, writer: Writer) -> None:
    data = make_image(20 * CS, seed=2)
    await full(writer, data, vm="a")
    count = len(await chunk_objects(repo))
    _disk, stats = await writer.write_disk(
        BytesSource(data), key=2001, capacity=len(data), file="b/b-flat.vmdk"
    )
    assert stats.chunks_written == 0 and stats.chunks_reused == 20 - stats.zero_windows
    assert len(await chunk_objects(repo)) == count


async def test_incremental_reads_only_touched_windows(repo: Repository, writer: Writer) -> None:
    base = bytearray(make_image(32 * CS + 512, seed=3))
    rp1 = await full(writer, bytes(base))
    parent = (await repo.load(rp1)).disks[0]
    changes = [(5 * CS + 100, 10), (6 * CS - 1, 2), (31 * CS + 7, CS + 500)]
    for off, n in changes:
        base[off : off + n] = b"\xab" * n
    src = BytesSource(bytes(base))
    disk, stats = await writer.write_disk(
        src,
        key=2000,
        capacity=len(base),
        file="web/web-flat.vmdk",
        parent=parent,
        parent_id=rp1,
        changed=changes,
    )
    assert sorted(off // CS for off, _ in src.reads) == [5, 6, 31, 32]
    assert stats.windows_read == 4 and disk.built_on == rp1 and disk.stored_windows == 4
    rp2 = restore_point(vm_name="web", started=NOW, finished=NOW, disks=[disk], parent=rp1)
    await repo.commit(rp2)
    assert await read_all(repo, rp2.id) == bytes(base)
    # equal to a full read of the new image, and the parent is untouched
    full_disk, _ = await writer.write_disk(
        BytesSource(bytes(base)), key=2000, capacity=len(base), file="web/web-flat.vmdk"
    )
    assert full_disk.chunks == disk.chunks and full_disk.tree == disk.tree
    assert await read_all(repo, rp1) != bytes(base)


async def test_deleting_the_parent_never_breaks_a_child(repo: Repository, writer: Writer) -> None:
    data = bytearray(make_image(8 * CS, seed=4))
    rp1 = await full(writer, bytes(data))
    data[0:10] = b"0123456789"
    disk, _ = await writer.write_disk(
        BytesSource(bytes(data)),
        key=2000,
        capacity=len(data),
        file="f",
        parent=(await repo.load(rp1)).disks[0],
        parent_id=rp1,
        changed=[(0, 10)],
    )
    rp2 = restore_point(vm_name="web", started=NOW, finished=NOW, disks=[disk], parent=rp1)
    await repo.commit(rp2)
    await repo.forget(rp1)
    assert await repo.restore_point_ids() == [rp2.id]
    assert await read_all(repo, rp2.id) == bytes(data)


async def test_resized_disk_makes_a_full(repo: Repository, writer: Writer) -> None:
    data = make_image(8 * CS, seed=5)
    rp1 = await full(writer, data)
    bigger = data + make_image(2 * CS, seed=6)
    disk, stats = await writer.write_disk(
        BytesSource(bigger),
        key=2000,
        capacity=len(bigger),
        file="f",
        parent=(await repo.load(rp1)).disks[0],
        parent_id=rp1,
        changed=[(0, 1)],
    )
    assert stats.windows_read == 10 and disk.built_on is None


async def test_ranged_reads(repo: Repository, writer: Writer) -> None:
    data = make_image(10 * CS + 77, seed=7)
    rp = await repo.load(await full(writer, data))
    for off, n in [(0, 1), (CS - 3, 7), (3 * CS, 2 * CS), (10 * CS, 77), (5, 10 * CS + 72)]:
        got = b"".join([p async for p in read_disk(repo, rp, rp.disks[0], off, n)])
        assert got == data[off : off + n]


async def test_small_files_are_chunks_with_checksums(repo: Repository, writer: Writer) -> None:
    vmx = b'config.version = "8"\n' * 100
    entry, _ = await writer.write_file("web/web.vmx", vmx)
    assert entry.size == len(vmx) and len(entry.chunks) == 1
    assert await repo.get_chunk(str(entry.chunks[0])) == vmx


async def test_corrupt_chunk_read_names_chunk_and_restore_point(
    repo: Repository, writer: Writer, tmp_path: Path
) -> None:
    data = make_image(6 * CS, seed=8)
    rp_id = await full(writer, data)
    rp = await repo.load(rp_id)
    victim = next(c for _, _, c in rp.disks[0].windows() if c)
    path = tmp_path / "repo" / chunk_key(victim)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkError) as exc:
        await read_all(repo, rp_id)
    assert victim in str(exc.value) and rp_id in str(exc.value)
    path.unlink()
    with pytest.raises(ChunkError, match=rf"{victim} is missing \(needed by restore point {rp_id}\)"):
        await read_all(repo, rp_id)


async def test_commit_is_idempotent_but_never_overwrites(repo: Repository, writer: Writer) -> None:
    data = make_image(2 * CS, seed=9)
    disk, _ = await writer.write_disk(BytesSource(data), key=1, capacity=len(data), file="f")
    rp = restore_point(vm_name="a", started=NOW, finished=NOW, disks=[disk])
    await repo.commit(rp)
    await repo.commit(rp)
    other = rp.model_copy(update={"vm_name": "b"})
    with pytest.raises(ManifestError, match="already exists"):
        await repo.commit(other)


async def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(NotARepository, match=r"not a vbm repository \(no config object"):
        await Repository.open(LocalBackend(tmp_path))
    repo = await Repository.init(LocalBackend(tmp_path))
    with pytest.raises(NotARepository, match="already a vbm repository"):
        await Repository.init(LocalBackend(tmp_path))
    config = json.loads((tmp_path / "config").read_text())
    (tmp_path / "config").unlink()
    (tmp_path / "config").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(UnsupportedVersion, match="format version 99; this vbm reads version 1"):
        await Repository.open(LocalBackend(tmp_path))
    (tmp_path / "config").write_text("{not json")
    with pytest.raises(NotARepository, match="not JSON"):
        await Repository.open(LocalBackend(tmp_path))
    assert repo.chunk_size == 4 * 1024 * 1024


async def test_missing_restore_point(repo: Repository) -> None:
    with pytest.raises(ManifestError, match="rp-x does not exist"):
        await repo.load("rp-x")
