"""SHA-256 of disk images (manifest.json): by the writer for a full, by the verifier otherwise,
always equal to the SHA-256 of the image as exported, with no second read of any chunk."""

from __future__ import annotations

import asyncio
import hashlib
import random
from datetime import UTC, datetime

from services.verifier.handlers import verify_restore_point
from shared.repo import Repository, Writer, restore_point
from shared.repo import digests as sha
from shared.repo.repository import chunk_key
from tests.repo.conftest import BytesSource, make_image, read_all

NOW = datetime(2026, 12, 6, tzinfo=UTC)
CS = 64 * 1024


class SlowSource(BytesSource):
    """Reads that end in a random order, so that the workers finish windows out of order."""

    def __init__(self, data: bytes, seed: int) -> None:
        super().__init__(data)
        self.rng = random.Random(seed)

    async def read(self, offset: int, length: int) -> bytes:
        await asyncio.sleep(self.rng.random() / 200)
        return await super().read(offset, length)


class Counting:
    """Counts the chunk reads of a repository (no second read of a chunk)."""

    def __init__(self, repo: Repository) -> None:
        self.reads: dict[str, int] = {}
        real = repo.get_chunk

        async def get_chunk(cid: str, rp: str | None = None) -> bytes:
            self.reads[cid] = self.reads.get(cid, 0) + 1
            return await real(cid, rp)

        repo.get_chunk = get_chunk  # type: ignore[method-assign,assignment]


async def test_a_full_hashes_its_image_in_disk_order(repo: Repository, writer: Writer) -> None:
    data = make_image(40 * CS + 1234, seed=3)  # a short last window
    allocated = [(0, 10 * CS), (25 * CS, len(data) - 25 * CS)]
    image = data[: 10 * CS] + bytes(15 * CS) + data[25 * CS :]  # what is not allocated reads as zeros
    digest = sha.OrderedSha256(len(data), CS)
    disk, _ = await writer.write_disk(
        SlowSource(data, 1), key=2000, capacity=len(data), file="w/w-flat.vmdk", allocated=allocated,
        sha256=digest,
    )  # fmt: skip
    assert digest.skipped is None
    assert digest.hexdigest() == hashlib.sha256(image).hexdigest()
    rp = restore_point(vm_name="w", started=NOW, finished=NOW, disks=[disk])
    await repo.commit(rp)
    assert hashlib.sha256(await read_all(repo, rp.id)).hexdigest() == digest.hexdigest()


async def test_an_incremental_is_hashed_by_the_verifier_reading_each_chunk_once(
    repo: Repository, writer: Writer
) -> None:
    base = bytearray(make_image(30 * CS, seed=5))
    base[20 * CS : 28 * CS] = bytes(range(256)) * (8 * CS // 256)  # 8 windows with one content
    first, _ = await writer.write_disk(BytesSource(bytes(base)), key=2000, capacity=len(base), file="w")
    parent = restore_point(vm_name="w", started=NOW, finished=NOW, disks=[first])
    await repo.commit(parent)
    new = bytearray(base)
    new[3 * CS + 7 : 3 * CS + 99] = b"x" * 92
    digest = sha.OrderedSha256(len(new), CS)
    disk, _ = await writer.write_disk(
        BytesSource(bytes(new)), key=2000, capacity=len(new), file="w", parent=first,
        parent_id=parent.id, changed=[(3 * CS + 7, 92)], sha256=digest,
    )  # fmt: skip
    assert digest.hexdigest() is None and digest.skipped == sha.INCREMENTAL
    rp = restore_point(vm_name="w", started=NOW, finished=NOW, disks=[disk], parent=parent.id)
    await repo.commit(rp)
    exported = hashlib.sha256(await read_all(repo, rp.id)).hexdigest()
    counting = Counting(repo)
    problems, _, sums = await verify_restore_point(repo, rp.id)
    assert problems == []
    assert sums["2000"]["sha256"] == hashlib.sha256(new).hexdigest() == exported
    assert sums["2000"]["size_bytes"] == len(new) and sums["2000"]["by"] == "verifier"
    assert set(counting.reads.values()) == {1}  # every chunk once, the repeated one too
    assert len(counting.reads) == len(rp.chunk_ids())


async def test_a_known_sha256_is_not_computed_again(repo: Repository, writer: Writer) -> None:
    data = make_image(8 * CS, seed=9)
    disk, _ = await writer.write_disk(BytesSource(data), key=2000, capacity=len(data), file="w")
    rp = restore_point(vm_name="w", started=NOW, finished=NOW, disks=[disk])
    await repo.commit(rp)
    problems, _, sums = await verify_restore_point(repo, rp.id, known_sha256={2000})
    assert problems == [] and sums == {}


async def test_many_repeated_chunks_are_read_again_beyond_what_is_kept(
    repo: Repository, writer: Writer
) -> None:
    windows = [bytes([i % 40 + 1]) * CS for i in range(120)]  # 40 contents, each 3 times, far apart
    data = b"".join(windows)
    disk, _ = await writer.write_disk(BytesSource(data), key=1, capacity=len(data), file="w")
    rp = restore_point(vm_name="w", started=NOW, finished=NOW, disks=[disk])
    await repo.commit(rp)
    problems, _, sums = await verify_restore_point(repo, rp.id)
    assert problems == [] and sums["1"]["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_resumed_full_leaves_it_to_the_verifier(repo: Repository, writer: Writer) -> None:
    data = make_image(6 * CS, seed=2)
    digest = sha.OrderedSha256(len(data), CS)
    await writer.write_disk(
        BytesSource(data), key=1, capacity=len(data), file="w", known={0: None}, sha256=digest
    )
    assert digest.hexdigest() is None and digest.skipped == sha.RESUMED


async def test_a_damaged_chunk_leaves_no_sha256_and_is_reported_once(
    repo: Repository, writer: Writer
) -> None:
    data = make_image(10 * CS, seed=4)
    disk, _ = await writer.write_disk(BytesSource(data), key=1, capacity=len(data), file="w")
    rp = restore_point(vm_name="w", started=NOW, finished=NOW, disks=[disk])
    await repo.commit(rp)
    victim = sorted(rp.chunk_ids())[0]
    await repo.backend.delete(chunk_key(victim))
    problems, _, sums = await verify_restore_point(repo, rp.id)
    assert len(problems) == 1 and victim in problems[0]
    assert sums["1"]["sha256"] is None and sums["1"]["why"] == sha.DAMAGED


async def test_the_sha256_object_lives_next_to_the_manifest(repo: Repository, writer: Writer) -> None:
    data = make_image(4 * CS, seed=1)
    disk, _ = await writer.write_disk(BytesSource(data), key=1, capacity=len(data), file="w")
    rp = restore_point(vm_name="w", started=NOW, finished=NOW, disks=[disk])
    await repo.commit(rp)
    entry = {"file": "w", "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "by": "mover"}
    assert await sha.write_sums(repo, rp.id, {"1": entry})
    assert not await sha.write_sums(repo, rp.id, {"1": {**entry, "sha256": "0" * 64}})  # written once
    assert await sha.read_sums(repo, rp.id) == {"1": entry}
    assert await repo.restore_point_ids() == [rp.id]  # not a restore point of its own
    await repo.forget(rp.id)
    assert await sha.read_sums(repo, rp.id) is None
