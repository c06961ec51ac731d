"""Writing disks and small files into a repository, full or incremental, streaming.

A disk is read window by window (the repository's chunk size, aligned to disk offsets). Each
window is checked for zeros, hashed, and, when the repository lacks it, compressed and stored.
A fixed number of workers each own one window at a time, so memory stays bounded whatever the
disk size (about `workers` x 2 x chunk size). Hashing and compression run in a thread pool.

An incremental starts from the parent restore point's chunk list and re-reads only the windows
that the changed byte ranges touch; every other window is inherited by reference, so the new
restore point is complete by itself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from shared.repo import chunk as chunks
from shared.repo.digests import INCREMENTAL, RESUMED, OrderedSha256
from shared.repo.errors import RepoError
from shared.repo.manifest import (
    DiskEntry,
    FileEntry,
    RestorePoint,
    SkippedDiskEntry,
    compact,
    expand,
    tree_digest,
)
from shared.repo.repository import Repository, new_restore_point_id


class DiskSource(Protocol):
    """Where a disk's bytes come from (a snapshot over HTTP, a local file, ...).

    A source may also offer `async read_into(offset, buf: memoryview) -> None`, which fills
    `buf` exactly; the writer then reads every window into one reused buffer per worker.
    """

    async def read(self, offset: int, length: int) -> bytes: ...


@dataclass
class WriteStats:
    windows_read: int = 0
    bytes_read: int = 0
    zero_windows: int = 0
    chunks_written: int = 0
    chunks_reused: int = 0
    bytes_stored: int = 0

    def add(self, other: WriteStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


Progress = Callable[[int], None]


def _default_workers() -> int:
    return max(2, min(8, (os.cpu_count() or 2) * 2))


@dataclass
class Writer:
    """Writes into one repository; reuse it for all disks of a run (one thread pool)."""

    repo: Repository
    workers: int = field(default_factory=_default_workers)
    _pool: ThreadPoolExecutor | None = None

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="vbm-chunk")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def _store(self, data: bytes | memoryview, stats: WriteStats) -> str | None:
        loop = asyncio.get_running_loop()
        cid = await loop.run_in_executor(self._pool, chunks.id_or_zero, data)
        if cid is None:
            stats.zero_windows += 1
            return None
        if await self.repo.has_chunk(cid):
            stats.chunks_reused += 1
            return cid
        stored = await loop.run_in_executor(self._pool, chunks.encode, data)
        if await self.repo.put_chunk(cid, stored):
            stats.chunks_written += 1
            stats.bytes_stored += len(stored)
        else:
            stats.chunks_reused += 1
        return cid

    async def write_disk(
        self,
        source: DiskSource,
        *,
        key: int,
        capacity: int,
        file: str,
        label: str = "",
        change_id: str | None = None,
        parent: DiskEntry | None = None,
        parent_id: str | None = None,
        changed: Sequence[tuple[int, int]] | None = None,
        allocated: Sequence[tuple[int, int]] | None = None,
        progress: Progress | None = None,
        known: Mapping[int, str | None] | None = None,
        on_window: Callable[[int, str | None], None] | None = None,
        sha256: OrderedSha256 | None = None,
    ) -> tuple[DiskEntry, WriteStats]:
        """Back up one disk: all windows, or (with `parent` and `changed`) only touched ones.

        For a full, `allocated` (CBT's answer for '*') limits reading to the windows it touches;
        the others are unallocated, which reads as zeros, and are recorded as zero windows.

        Resuming: `known` gives windows an earlier attempt already stored (index -> chunk id, None
        for zero); they are not read again. `on_window` hears of every window this call stores,
        so the caller can checkpoint them.

        `sha256`: for a full read from the start, it hears every window in disk order (the SHA-256
        of the flat image, see digests.py); otherwise its `skipped` says why it is not computed.
        """
        size = self.repo.chunk_size
        count = -(-capacity // size)
        incremental = (
            parent is not None
            and changed is not None
            and parent.capacity == capacity
            and parent.chunk_size == size
        )
        if incremental:
            assert parent is not None and changed is not None
            entries = expand(parent.chunks)
            todo: Iterable[int] = touched_windows(changed, size, capacity)
        else:
            entries = [None] * count
            todo = range(count) if allocated is None else touched_windows(allocated, size, capacity)
        stats = WriteStats()
        if known:
            for index, cid in known.items():
                if 0 <= index < count:
                    entries[index] = cid
            todo = [i for i in todo if i not in known]
        if sha256 is not None:
            sha256.skipped = INCREMENTAL if incremental else RESUMED if known else None
            todo = list(todo)
            sha256.expect(todo)
            if sha256.skipped:
                sha256 = None
        indexes = iter(todo)
        read_into: Callable[[int, memoryview], Awaitable[None]] | None = getattr(source, "read_into", None)

        async def work() -> None:
            buf = memoryview(bytearray(size)) if read_into is not None else None
            for index in indexes:  # one iterator shared by the workers (single-threaded)
                offset = index * size
                length = min(size, capacity - offset)
                data: bytes | memoryview
                if buf is not None and read_into is not None:
                    data = buf[:length]
                    await read_into(offset, data)  # the buffer is free again once _store returns
                else:
                    data = await source.read(offset, length)
                if len(data) != length:
                    raise RepoError(f"short read of {file} at offset {offset}: {len(data)} of {length} bytes")
                stats.windows_read += 1
                stats.bytes_read += length
                # the SHA-256 in a thread, in disk order, while the window is stored; the window
                # counts as done (progress, checkpoint) once stored, even while it waits its turn
                hashing = asyncio.ensure_future(sha256.feed(index, data)) if sha256 is not None else None
                try:
                    entries[index] = await self._store(data, stats)
                    if on_window is not None:
                        on_window(index, entries[index])
                    if progress is not None:
                        progress(length)
                    if hashing is not None:
                        await hashing
                finally:  # the buffer is reused only once both are done with it
                    if hashing is not None:
                        hashing.cancel()
                        await asyncio.gather(hashing, return_exceptions=True)

        await _run_all([work() for _ in range(self.workers)])
        if sha256 is not None:
            await sha256.finish()
        disk = DiskEntry(
            key=key,
            label=label,
            file=file,
            capacity=capacity,
            chunk_size=size,
            chunks=compact(entries),
            tree=tree_digest(entries, capacity, size),
            change_id=change_id,
            built_on=parent_id if incremental else None,
            stored_windows=stats.windows_read,
        )
        return disk, stats

    async def write_file(self, path: str, data: bytes) -> tuple[FileEntry, WriteStats]:
        """Store a small file (vmx, nvram, descriptor) as chunks, with its whole BLAKE3 digest."""
        stats = WriteStats()
        size = self.repo.chunk_size
        ids: list[str | None] = []
        for offset in range(0, len(data), size):
            piece = data[offset : offset + size]
            stats.windows_read += 1
            stats.bytes_read += len(piece)
            ids.append(await self._store(piece, stats))
        digest = chunks.chunk_id(data)
        return FileEntry(path=path, size=len(data), digest=digest, chunks=compact(ids)), stats


async def _run_all(coros: list[Coroutine[object, object, None]]) -> None:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def touched_windows(ranges: Sequence[tuple[int, int]], size: int, capacity: int) -> list[int]:
    """Window indexes that any (offset, length) range touches, sorted, each once."""
    out: set[int] = set()
    for offset, length in ranges:
        if length <= 0:
            continue
        if offset < 0 or offset + length > capacity:
            raise ValueError(f"changed range {offset}+{length} is outside the disk ({capacity})")
        out.update(range(offset // size, (offset + length - 1) // size + 1))
    return sorted(out)


def restore_point(
    *,
    vm_name: str,
    started: datetime,
    finished: datetime,
    disks: Sequence[DiskEntry],
    files: Sequence[FileEntry] = (),
    parent: str | None = None,
    rp_id: str | None = None,
    skipped: Sequence[SkippedDiskEntry] = (),
    **meta: str | None,
) -> RestorePoint:
    return RestorePoint(
        id=rp_id or new_restore_point_id(finished),
        vm_name=vm_name,
        started=started,
        finished=finished,
        parent=parent,
        disks=tuple(disks),
        files=tuple(files),
        skipped=tuple(skipped),
        **meta,
    )
