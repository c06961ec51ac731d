"""A transfer's tracker: counts bytes, reports progress (database and live subject), extends the
task's deadline while data arrives, and notices a cancel or the task being ended by someone else."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from services.mover.checkpoint import Checkpoint
from services.mover.deps import Deps
from shared.catalog import tasks as state
from shared.contracts import DiskProgress, SnapshotReady, TaskProgress, cancel_subject, progress_subject
from shared.db.models import Run, Task


class Cancelled(Exception):
    pass


@dataclass
class Tracker:
    """Counts bytes, reports progress (database and live subject) and notices cancellation."""

    deps: Deps
    event: SnapshotReady
    total: int
    done: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False  # the task was ended by someone else (watchdog): drop the work
    saved: int = -1  # bytes done at the last extension of the deadline
    checkpoints: list[Checkpoint] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)  # disk key -> what it waits for
    sources: list[Any] = field(default_factory=list)  # disks being read: bytes arriving = alive
    received: int = -1
    disks: dict[int, DiskCount] = field(default_factory=dict)  # disk key -> its count

    def __call__(self, n: int) -> None:
        self.done += n

    def disk(self, key: int, label: str, planned: int) -> DiskCount:
        """The counter of one disk, to pass as `progress=`: adds to the disk's bytes and the total."""
        count = self.disks[key] = DiskCount(self, key, label, planned)
        return count

    async def publish(self, rate: float) -> None:
        """One live sample of the task, with its disks (best effort)."""
        with contextlib.suppress(Exception):
            await self.deps.ctx.bus.publish_live(
                progress_subject(self.event.run_id),
                TaskProgress(
                    run_id=self.event.run_id,
                    task_id=self.event.task_id,
                    vm_name=self.event.vm_name,
                    phase="transfer",
                    bytes_done=self.done,
                    bytes_total=self.total,
                    rate=rate,
                    sent_at=self.deps.ctx.clock(),
                    note=self.note,
                    disks=[
                        DiskProgress(key=c.key, label=c.label, bytes_done=c.done, bytes_total=c.total)
                        for c in self.disks.values()
                    ],
                ),
            )

    def waiting(self, disk: int) -> Any:
        """A setter for one disk's note (None: no longer waiting)."""

        def say(note: str | None) -> None:
            if note is None:
                self.notes.pop(disk, None)
            else:
                self.notes[disk] = note

        return say

    @property
    def note(self) -> str | None:
        return "; ".join(sorted(set(self.notes.values()))) or None

    async def run(self) -> None:
        ctx = self.deps.ctx
        started = asyncio.get_running_loop().time()
        sub = await ctx.bus.nc.subscribe(cancel_subject(self.event.run_id), cb=self._on_cancel)
        try:
            if await asyncio.to_thread(self._save, 0.0):  # the plan's total shows at once
                self.cancelled.set()
                return
            while True:
                await asyncio.sleep(1.0)
                elapsed = max(asyncio.get_running_loop().time() - started, 1e-3)
                rate = self.done / elapsed
                for cp in self.checkpoints:
                    with contextlib.suppress(Exception):  # a checkpoint is an optimisation only
                        await cp.save()
                if await asyncio.to_thread(self._save, rate):
                    self.cancelled.set()
                    return
                await self.publish(rate)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_cancel(self, _msg: object) -> None:
        self.cancelled.set()

    def _save(self, rate: float) -> bool:
        ctx = self.deps.ctx
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            task = s.get(Task, self.event.task_id)
            run = s.get(Run, self.event.run_id)
            if not ours(task, self.event):
                self.ended = True  # someone else ended it (or began another try): stop
                return True
            assert task is not None
            task.bytes_done, task.bytes_total, task.rate = self.done, self.total, rate
            task.wait_reason = self.note
            # Progress extends the deadline, and so do bytes arriving within a window (a slow
            # link) and waiting for a stream (throttled): a mover that stalls or dies writes
            # nothing, and the watchdog catches it.
            received = sum(src.received for src in self.sources)
            arriving = received != self.received
            self.received = received
            if self.done != self.saved or self.note or arriving:
                self.saved = self.done
                task.updated_at = now
                task.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.transfer_stall)
            return bool(run is not None and run.cancel_requested)


class DiskCount:
    """One disk's bytes done of its plan; calling it adds to the disk and to the task's total."""

    __slots__ = ("done", "key", "label", "total", "tracker")

    def __init__(self, tracker: Tracker, key: int, label: str, total: int) -> None:
        self.tracker, self.key, self.label, self.total, self.done = tracker, key, label, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.tracker.done += n


class CancellableDisk:
    def __init__(self, inner: object, tracker: Tracker) -> None:
        self.inner = inner
        self.tracker = tracker

    async def read(self, offset: int, length: int) -> bytes:
        if self.tracker.cancelled.is_set():
            raise Cancelled("cancelled")
        return await self.inner.read(offset, length)  # type: ignore[attr-defined, no-any-return]

    async def read_into(self, offset: int, buf: memoryview) -> None:
        if self.tracker.cancelled.is_set():
            raise Cancelled("cancelled")
        await self.inner.read_into(offset, buf)  # type: ignore[attr-defined]


def ours(task: Task | None, event: SnapshotReady) -> bool:
    """Whether the task is still in this event's transfer: not ended, not moved on, and not in
    another try (each try has its own snapshot)."""
    return (
        task is not None
        and task.phase == "transfer"
        and task.state not in state.FINAL
        and task.snapshot_moref == event.snapshot_moref
    )


def still_ours(deps: Deps, event: SnapshotReady) -> None:
    with deps.ctx.sessions() as s:
        if not ours(s.get(Task, event.task_id), event):
            raise state.Stale(f"task {event.task_id} was ended while transferring")
