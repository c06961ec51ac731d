"""SHA-256 of whole disk images, for `manifest.json` (anyone can check a disk with `sha256sum`).

Chunks stay named by BLAKE3 (manifest.py); the SHA-256 of a disk is the SHA-256 of its flat image
exactly as `vbm repo export` writes it (every window in disk order, zero windows as zeros). It is
computed where the bytes pass anyway, never by a second read: by the writer for a full
(`OrderedSha256`, fed by the workers as they read), by the verifier for anything else
(`ordered_windows`, its read of every chunk, done in disk order).

Once every disk of a restore point has its SHA-256, the object `manifests/<id>.sha256.json` is
written next to the manifest (once: the manifest itself never changes):

    {"format": "vbm-sha256", "version": 1, "restore_point": ID,
     "disks": {"2000": {"file": "web/web-flat.vmdk", "size_bytes": N, "sha256": HEX, "by": "mover"}}}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from shared.repo.errors import ChunkError, ObjectMissing
from shared.repo.manifest import DiskEntry
from shared.repo.repository import Repository, manifest_key

ZERO_STEP = 4 * 1024 * 1024  # zeros are hashed from one buffer of this size
KEEP = 16  # chunks kept in memory by the verifier for a later window with the same content

INCREMENTAL = "incremental: computed when the verifier has read it"
RESUMED = "resumed from a checkpoint: computed when the verifier has read it"
DAMAGED = "not computed: a chunk of the disk is missing or damaged"


def sums_key(rp_id: str) -> str:
    return manifest_key(rp_id) + ".sha256.json"


def is_sums_key(name: str) -> bool:
    return name.endswith(".sha256.json")


class OrderedSha256:
    """SHA-256 of a disk whose windows arrive out of order from several workers: `feed` waits for
    its turn (every window before it fed), hashes in a thread (hashlib releases the GIL), and
    hashes zeros for the windows that are never read (unallocated). Memory: none of its own; a
    worker keeps its window until its turn, so it is bounded by the writer's workers."""

    def __init__(self, capacity: int, window: int) -> None:
        self.capacity, self.window = capacity, window
        self.skipped: str | None = None  # why it is not computed (set by the writer)
        self._h = hashlib.sha256()
        self._order: list[int] = []
        self._at = 0  # index into _order of the next window to hash
        self._done = 0  # bytes hashed
        self._turn = asyncio.Condition()
        self._digest: str | None = None

    def expect(self, windows: Sequence[int]) -> None:
        """The windows that will be fed, ascending; every other window is zeros."""
        self._order = list(windows)

    async def feed(self, index: int, data: bytes | memoryview) -> None:
        async with self._turn:
            await self._turn.wait_for(lambda: self._order[self._at] == index)
        await asyncio.to_thread(self._update, index * self.window, data)
        async with self._turn:
            self._at += 1
            self._turn.notify_all()

    def _update(self, offset: int, data: bytes | memoryview) -> None:
        self._zeros(offset)
        self._h.update(data)
        self._done = offset + len(data)

    def _zeros(self, upto: int) -> None:
        zero = memoryview(bytes(min(ZERO_STEP, max(upto - self._done, 0))))
        while self._done < upto:
            step = min(len(zero), upto - self._done)
            self._h.update(zero[:step])
            self._done += step

    async def finish(self) -> str:
        if self._at != len(self._order):
            raise RuntimeError(f"{len(self._order) - self._at} windows were never fed")
        await asyncio.to_thread(self._zeros, self.capacity)
        self._digest = self._h.hexdigest()
        return self._digest

    def hexdigest(self) -> str | None:
        return None if self.skipped else self._digest


async def ordered_windows(
    repo: Repository,
    rp_id: str,
    disk: DiskEntry,
    seen: set[str],
    problem: Callable[[ChunkError], None],
    ahead: int = 4,
) -> AsyncIterator[bytes | memoryview | None]:
    """Every window of `disk` in order (zeros for zero windows, None for a chunk that cannot be
    read), fetching `ahead` chunks in parallel; adds every chunk read to `seen`. A chunk that
    comes again later in the disk is kept in memory for it (up to KEEP such chunks; beyond, it is
    read again when it comes)."""
    windows = list(disk.windows())
    left: dict[str, int] = {}
    for _, _, cid in windows:
        if cid is not None:
            left[cid] = left.get(cid, 0) + 1
    zero = memoryview(bytes(disk.chunk_size))
    live: dict[str, asyncio.Task[bytes | None]] = {}  # chunks being read, or kept for later
    tasks: dict[int, asyncio.Task[bytes | None]] = {}  # window index -> its chunk

    async def get(cid: str) -> bytes | None:
        try:
            return await repo.get_chunk(cid, rp_id)
        except ChunkError as exc:
            problem(exc)
            return None

    def start(i: int) -> None:
        cid = windows[i][2]
        if cid is not None:
            if cid not in live:
                live[cid] = asyncio.ensure_future(get(cid))
                seen.add(cid)
            tasks[i] = live[cid]

    kept: list[str] = []
    try:
        for i in range(min(ahead, len(windows))):
            start(i)
        for i, (_, length, cid) in enumerate(windows):
            if i + ahead < len(windows):
                start(i + ahead)
            if cid is None:
                yield zero[:length]
                continue
            data = await tasks.pop(i)
            left[cid] -= 1
            if left[cid] == 0:
                live.pop(cid, None)
                if cid in kept:
                    kept.remove(cid)
            elif cid not in kept:
                kept.append(cid)
                if len(kept) > KEEP:  # the oldest kept is read again when it comes
                    live.pop(kept.pop(0), None)
            yield data
    finally:
        left_over = [*live.values(), *tasks.values()]
        for task in left_over:
            task.cancel()
        await asyncio.gather(*left_over, return_exceptions=True)  # none fails with no one to see


def document(rp_id: str, disks: dict[str, dict[str, Any]]) -> bytes:
    body = {"format": "vbm-sha256", "version": 1, "restore_point": rp_id, "disks": disks}
    return json.dumps(body, indent=1, sort_keys=True).encode()


async def write_sums(repo: Repository, rp_id: str, disks: dict[str, dict[str, Any]]) -> bool:
    """Write the point's SHA-256 object once; False when it exists already."""
    return await repo.backend.put_if_absent(sums_key(rp_id), document(rp_id, disks), durable=True)


async def read_sums(repo: Repository, rp_id: str) -> dict[str, dict[str, Any]] | None:
    try:
        raw = await repo.backend.get(sums_key(rp_id))
    except ObjectMissing:
        return None
    data = json.loads(raw)
    disks = data.get("disks") if isinstance(data, dict) else None
    return disks if isinstance(disks, dict) else None
