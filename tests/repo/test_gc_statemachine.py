"""Garbage collection beside running backups: random histories of writers, commits, prunes, GCs.

An injected clock drives the objects' modification times (`LocalBackend(clock=...)`). Writers
store or reuse chunks window by window over simulated minutes or hours (a long-running writer
spans many GCs), some commit, some are abandoned (a crashed mover); prunes forget restore points;
GC runs with the cut-off the services use: the start of the oldest running writer (or now),
minus five minutes. After every step: every committed, unpruned restore point reads back
byte-identical, and every chunk a running writer has stored or reused so far still exists.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shared.repo import LocalBackend, Repository, read_disk, restore_point
from shared.repo import chunk as chunks
from shared.repo.gc import collect
from shared.repo.manifest import DiskEntry, compact, tree_digest
from shared.repo.repository import chunk_key

T = TypeVar("T")
SIZE = 4096
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
BLOCKS = [bytes([i]) * 7 + bytes(range(256)) * 15 + bytes([i]) * (SIZE - 7 - 3840) for i in range(1, 10)]
STATS = {"histories": 0, "gcs": 0, "removed": 0, "spared": 0}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Backup:
    start: float
    windows: list[int]  # block index per window, 0 = a zero window
    ids: list[str | None] = field(default_factory=list)

    @property
    def image(self) -> bytes:
        return b"".join(bytes(SIZE) if w == 0 else BLOCKS[w - 1] for w in self.windows)


class GCMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        STATS["histories"] += 1
        self.dir = Path(tempfile.mkdtemp(prefix="vbm-gc-"))
        self.now = T0
        self.backend = LocalBackend(self.dir, clock=lambda: self.now)
        self.repo = run(Repository.init(self.backend, chunk_size=SIZE))
        self.running: list[Backup] = []
        self.committed: dict[str, bytes] = {}
        # leftovers of a backup that died two days ago: every block stored, none referenced, so
        # writers keep finding old unreferenced chunks to reuse (the case a GC must not get wrong)
        self.now = T0 - 2 * 86400
        for block in BLOCKS[::2]:
            run(self.repo.put_chunk(chunks.chunk_id(block), chunks.encode(block)))
        self.now = T0

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(minutes=st.sampled_from([0, 1, 4, 6, 30, 240, 1440]))
    def wait(self, minutes: int) -> None:
        self.now += minutes * 60

    @precondition(lambda self: len(self.running) < 3)
    @rule(windows=st.lists(st.integers(0, len(BLOCKS)), min_size=1, max_size=6))
    def start_backup(self, windows: list[int]) -> None:
        self.running.append(Backup(self.now, windows))

    @precondition(lambda self: bool(self.running))
    @rule(which=st.integers(0, 2), n=st.integers(1, 3))
    def write(self, which: int, n: int) -> None:
        b = self.running[which % len(self.running)]

        async def go() -> None:
            for w in b.windows[len(b.ids) : len(b.ids) + n]:
                if w == 0:
                    b.ids.append(None)
                    continue
                data = BLOCKS[w - 1]
                cid = chunks.chunk_id(data)
                if not await self.repo.has_chunk(cid):  # found: reused (and touched)
                    await self.repo.put_chunk(cid, chunks.encode(data))
                b.ids.append(cid)

        run(go())

    @precondition(lambda self: any(len(b.ids) == len(b.windows) for b in self.running))
    @rule()
    def commit(self) -> None:
        b = next(b for b in self.running if len(b.ids) == len(b.windows))
        self.running.remove(b)
        capacity = len(b.windows) * SIZE
        disk = DiskEntry(
            key=2000, file="vm/vm-flat.vmdk", capacity=capacity, chunk_size=SIZE, chunks=compact(b.ids),
            tree=tree_digest(b.ids, capacity, SIZE), stored_windows=len(b.ids),
        )  # fmt: skip
        when = datetime.fromtimestamp(self.now, UTC)
        rp = restore_point(vm_name="vm", started=when, finished=when, disks=[disk])
        run(self.repo.commit(rp))
        self.committed[rp.id] = b.image

    @precondition(lambda self: bool(self.running))
    @rule(which=st.integers(0, 2))
    def abandon(self, which: int) -> None:
        self.running.pop(which % len(self.running))  # a mover that died: its chunks become garbage

    @precondition(lambda self: bool(self.committed))
    @rule(which=st.integers(0, 10))
    def prune(self, which: int) -> None:
        rp_id = sorted(self.committed)[which % len(self.committed)]
        run(self.repo.forget(rp_id))
        del self.committed[rp_id]

    @rule()
    def gc(self) -> None:
        oldest = min([self.now] + [b.start for b in self.running])
        cutoff = datetime.fromtimestamp(oldest, UTC) - timedelta(minutes=5)
        report = run(collect(self.repo, cutoff=cutoff, now=datetime.fromtimestamp(self.now, UTC)))
        STATS["gcs"] += 1
        STATS["removed"] += report.chunks_removed
        STATS["spared"] += report.chunks_spared_young

    @invariant()
    def committed_points_read_back(self) -> None:
        async def check() -> None:
            assert sorted(await self.repo.restore_point_ids()) == sorted(self.committed)
            for rp_id, image in self.committed.items():
                rp = await self.repo.load(rp_id)
                got = b"".join([p async for p in read_disk(self.repo, rp, rp.disk(2000))])
                assert got == image, rp_id

        run(check())

    @invariant()
    def in_flight_chunks_exist(self) -> None:
        for b in self.running:
            for cid in b.ids:
                if cid is not None:
                    assert (self.dir / chunk_key(cid)).exists(), f"in-flight chunk {cid} was deleted"


# 1,000 histories in one test: on a 2-core machine shared with the other test worker
# (pytest-xdist) that takes longer than the suite's 120 s default. test_the_histories_exercised_gc
# reads what TestGC counted: on workers, run whole files (--dist loadfile) so they stay in order.
pytestmark = pytest.mark.timeout(300)

GCMachine.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestGC = GCMachine.TestCase


def test_the_histories_exercised_gc() -> None:
    """Runs after TestGC (file order): the histories really removed and spared chunks."""
    assert STATS["histories"] >= 1000, STATS
    assert STATS["removed"] > 0 and STATS["spared"] > 0, STATS
