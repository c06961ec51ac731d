"""Checking a repository: structure (every referenced chunk exists) and data (re-hash chunks).

The data check can read a fraction of the chunks per run, as restic's `--read-data-subset`: the
chunks whose id falls in a slice of the id space starting at `start`, so successive runs with
advancing starts cover everything over time. The report attributes every problem to each restore
point that depends on the damaged chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.repo.errors import ChunkError, ManifestError
from shared.repo.repository import Repository, chunk_key

ID_SPACE = 1 << 32


@dataclass
class CheckReport:
    restore_points: int = 0
    chunks_referenced: int = 0
    chunks_read: int = 0
    damaged_chunks: dict[str, str] = field(default_factory=dict)
    damaged_restore_points: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.damaged_chunks and not self.damaged_restore_points

    def blame(self, rp_id: str, problem: str) -> None:
        self.damaged_restore_points.setdefault(rp_id, []).append(problem)


def in_subset(chunk_id: str, start: float, fraction: float) -> bool:
    """Whether a chunk is in the slice [start, start+fraction) of the id space (wrapping)."""
    if fraction >= 1:
        return True
    if fraction <= 0:
        return False
    pos = int(chunk_id[:8], 16) / ID_SPACE
    lo = start % 1.0
    hi = lo + fraction
    return lo <= pos < hi or (hi > 1 and pos < hi - 1)


def slice_of(chunk_id: str, slices: int) -> int:
    """Which of `slices` equal slices of the id space a chunk falls in (exact integer arithmetic,
    so successive slices 0..slices-1 read every chunk exactly once)."""
    return (int(chunk_id[:8], 16) * slices) >> 32


async def check(
    repo: Repository,
    *,
    read_data: float = 0.0,
    start: float = 0.0,
    part: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
    parallel: int = 4,
) -> CheckReport:
    """Structure always; data for the chunks in `part` = (k, n) (slice k of n) if given, else
    for the fraction `read_data` of the id space from `start`."""
    report = CheckReport()
    users: dict[str, list[str]] = {}
    for rp_id in await repo.restore_point_ids():
        report.restore_points += 1
        try:
            rp = await repo.load(rp_id)
        except ManifestError as exc:
            report.blame(rp_id, str(exc))
            continue
        for cid in rp.chunk_ids():
            users.setdefault(cid, []).append(rp_id)
    report.chunks_referenced = len(users)

    present: dict[str, int] = {}
    async for info in repo.backend.list("chunks/"):
        present[info.key.rsplit("/", 1)[-1]] = info.size
    for cid in sorted(users):
        if cid not in present:
            report.damaged_chunks[cid] = "is missing"
        elif present[cid] == 0:
            report.damaged_chunks[cid] = "is empty (0 bytes)"

    def wanted(cid: str) -> bool:
        if part is not None:
            return slice_of(cid, part[1]) == part[0]
        return in_subset(cid, start, read_data)

    to_read = [cid for cid in sorted(users) if cid not in report.damaged_chunks and wanted(cid)]
    sem = asyncio.Semaphore(parallel)

    async def verify(cid: str) -> None:
        async with sem:
            try:
                await repo.get_chunk(cid)
            except ChunkError as exc:
                report.damaged_chunks[cid] = exc.problem
            report.chunks_read += 1
            if progress is not None:
                progress(1)

    await asyncio.gather(*(verify(cid) for cid in to_read))
    for cid, problem in sorted(report.damaged_chunks.items()):
        for rp_id in users[cid]:
            report.blame(rp_id, f"chunk {cid} {problem} ({chunk_key(cid)})")
    return report
