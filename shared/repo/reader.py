"""Reading restore points back: a disk image (or a byte range of it), verified chunk by chunk.

Every chunk is checked against its BLAKE3 digest as it is read; a mismatch raises ChunkError naming the
chunk and the restore point, so a reader never hands out wrong bytes. Reads run a few chunks
ahead (bounded) so decompression overlaps with the consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from shared.repo.chunk import chunk_id
from shared.repo.errors import ManifestError
from shared.repo.manifest import DiskEntry, FileEntry, RestorePoint, expand
from shared.repo.repository import Repository

ZERO_PIECE = 1024 * 1024


async def read_disk(
    repo: Repository,
    rp: RestorePoint,
    disk: DiskEntry,
    offset: int = 0,
    length: int | None = None,
    *,
    ahead: int = 3,
) -> AsyncIterator[bytes]:
    """Yield the bytes of `disk` from `offset` for `length` bytes (default: to the end)."""
    end = disk.capacity if length is None else min(disk.capacity, offset + length)
    if offset < 0 or offset > disk.capacity:
        raise ValueError(f"offset {offset} is outside disk {disk.key} ({disk.capacity} bytes)")
    wanted = [
        (w_off, w_len, cid)
        for w_off, w_len, cid in disk.windows()
        if w_off + w_len > offset and w_off < end and offset < end  # an empty range needs no chunk
    ]
    queue: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue(maxsize=ahead)

    async def fetch_zero(n: int) -> bytes:
        return b""

    in_hand: list[asyncio.Task[bytes]] = []  # started, but not in the queue yet

    async def produce() -> None:
        for _w_off, w_len, cid in wanted:
            if cid is None:
                task = asyncio.ensure_future(fetch_zero(w_len))
            else:
                task = asyncio.ensure_future(repo.get_chunk(cid, rp.id))
            in_hand.append(task)
            await queue.put(task)  # waits while the queue is full
            in_hand.pop()
        await queue.put(None)

    producer = asyncio.ensure_future(produce())
    try:
        for w_off, w_len, cid in wanted:
            task = await queue.get()
            assert task is not None
            data = await task
            lo = max(offset, w_off) - w_off
            hi = min(end, w_off + w_len) - w_off
            if cid is None:
                n = hi - lo
                while n > 0:
                    piece = min(n, ZERO_PIECE)
                    yield bytes(piece)
                    n -= piece
            else:
                yield data if (lo, hi) == (0, len(data)) else data[lo:hi]
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        leftovers: list[asyncio.Future[Any]] = [*in_hand]  # else it may fail with no one to see
        for started in in_hand:
            started.cancel()
        while not queue.empty():
            queued = queue.get_nowait()
            if queued is not None:
                queued.cancel()
                leftovers.append(queued)
        await asyncio.gather(*leftovers, return_exceptions=True)


async def read_file(repo: Repository, rp: RestorePoint, entry: FileEntry) -> bytes:
    """A small file of a restore point (vmx, nvram, descriptor), checked against its digest."""
    size = repo.chunk_size
    parts: list[bytes] = []
    for index, cid in enumerate(expand(entry.chunks)):
        parts.append(
            bytes(min(size, entry.size - index * size)) if cid is None else await repo.get_chunk(cid, rp.id)
        )
    data = b"".join(parts)
    if len(data) != entry.size or (entry.digest is not None and chunk_id(data) != entry.digest):
        raise ManifestError(f"file {entry.path} of restore point {rp.id} does not match its recorded digest")
    return data
