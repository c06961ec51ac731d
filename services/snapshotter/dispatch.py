"""The dispatcher: which VM is snapshotted when (docs/design.md, "Scheduling of work").

A snapshot is taken just in time: when a mover stream is free to read it and the limits that
protect production allow it, never when the run starts. Every pass (each second, and at once
when a run is asked for or a transfer ends):

1. plan: a queued run whose job has no earlier run in progress gets one task per VM (its VMs are
   resolved now, with where each lives); a run behind another of its job waits, saying so;
2. admit: waiting tasks, oldest run first, while every limit holds: the VM is not being backed up
   (by any job) and has no vbm snapshot open; the job's own `max_parallel_vms`; a free mover
   stream (the live movers' capacity); snapshots per datastore and per host; a datastore slowed
   down by storage latency control. A task that is not admitted keeps the reason it waits for;
3. snapshot what was admitted (`handlers.snapshot_task`); the snapshot's deadline starts now.

Admission is one transaction that first takes the `dispatch_lock` row, so several snapshotters
never admit past a limit together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.models import Job, Run, ServiceInstance, Task
from shared.db.work import DispatchLock, Throttle
from shared.pipeline import leases, ledger, runlog, state
from shared.runtime import Context

log = logging.getLogger(__name__)

BUSY = ("snapshot", "transfer")  # phases that hold a mover stream and an open snapshot
STALE_SNAPSHOT = timedelta(seconds=60)  # a snapshot step this quiet lost its snapshotter
THROTTLE_STALE = timedelta(minutes=10)


@dataclass(frozen=True)
class Placed:
    """A VM as planning found it: where it lives, for the limits."""

    vcenter: str
    moref: str
    name: str
    host: str | None = None
    datastores: tuple[str, ...] = ()


Resolve = Callable[[Job], Awaitable[list[Placed]]]
Snapshot = Callable[[str, str], Awaitable[None]]


@dataclass
class Dispatcher:
    ctx: Context
    resolve: Resolve
    snapshot: Snapshot
    kicked: asyncio.Event = field(default_factory=asyncio.Event)
    working: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def kick(self) -> None:
        self.kicked.set()

    async def run(self) -> None:
        interval = self.ctx.settings.pipeline.dispatch_interval
        while not self.ctx.stop.is_set():
            self.kicked.clear()
            try:
                await self.once()
            except Exception:
                log.exception("dispatch pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake(), interval)
        for task in self.working.values():
            task.cancel()
        await asyncio.gather(*self.working.values(), return_exceptions=True)

    async def _wake(self) -> None:
        stop = asyncio.ensure_future(self.ctx.stop.wait())
        kick = asyncio.ensure_future(self.kicked.wait())
        try:
            await asyncio.wait((stop, kick), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            kick.cancel()

    async def once(self) -> None:
        for run_id, job_id in await asyncio.to_thread(self._startable):
            await self._plan(run_id, job_id)
        admitted = await asyncio.to_thread(self._admit, set(self.working))
        for run_id, task_id in admitted:
            self.working[task_id] = asyncio.create_task(self._snapshot(run_id, task_id))

    async def _snapshot(self, run_id: str, task_id: str) -> None:
        try:
            await self.snapshot(run_id, task_id)
        finally:
            self.working.pop(task_id, None)
            self.kick()  # a failure may free a slot; a success changes nothing, cheaply

    # planning
    def _startable(self) -> list[tuple[str, str]]:
        """Queued runs that may start now; the others are told what they wait for."""
        ctx = self.ctx
        now = ctx.clock()
        out: list[tuple[str, str]] = []
        with ctx.sessions.begin() as s:
            queued = s.scalars(
                select(Run).where(Run.state == "queued").order_by(Run.created_at, Run.id)
            ).all()
            for run in queued:
                job = s.get(Job, run.job_id)
                if job is None or (job.options or {}).get("restore_test"):
                    continue
                if run.cancel_requested:
                    state.close_run(s, run, "cancelled", now)
                    continue
                ahead = _ahead_of(s, run)
                if ahead is not None:
                    reason = f"waiting for run {ahead} of this job to end (one run of a job at a time)"
                    if run.wait_reason != reason:
                        run.wait_reason = reason
                        runlog.write(s, run.id, reason, now)
                    continue
                out.append((run.id, run.job_id))
        return out

    async def _plan(self, run_id: str, job_id: str) -> None:
        ctx = self.ctx
        with ctx.sessions() as s:
            job = s.get(Job, job_id)
            if job is None:
                return
            s.expunge(job)
        try:
            vms = await self.resolve(job)
        except Exception as exc:  # the run cannot even be planned: it fails, saying why
            log.warning("run %s: planning failed: %s", run_id, exc)
            with ctx.sessions.begin() as s:
                run = s.get(Run, run_id)
                if run is not None and run.state == "queued":
                    run.error = f"cannot resolve the job's VMs: {exc}"[:4000]
                    state.close_run(s, run, "failed", ctx.clock())
            ctx.relay.kick()
            return
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            claimed = s.execute(
                update(Run)
                .where(Run.id == run_id, Run.state == "queued")
                .values(state="running", started_at=now, wait_reason=None)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return  # another snapshotter planned it
            for vm in vms:
                tid = state.task_id_for(run_id, vm.vcenter, vm.moref)
                if s.get(Task, tid) is not None:
                    continue
                s.add(
                    Task(
                        id=tid,
                        run_id=run_id,
                        vcenter=vm.vcenter,
                        vm_moref=vm.moref,
                        vm_name=vm.name,
                        phase="queued",
                        state="queued",
                        wait_reason="waiting for a mover",
                        host=vm.host,
                        datastores=list(vm.datastores),
                        warnings=[],
                        created_at=now,
                        updated_at=now,
                    )
                )
            names = ", ".join(v.name for v in vms[:20]) + (
                f" and {len(vms) - 20} more" if len(vms) > 20 else ""
            )
            runlog.write(s, run_id, f"run started: {len(vms)} VM(s): {names}", now)
            if not vms:
                run = s.get(Run, run_id)
                assert run is not None
                run.error = "the job's selection holds no VM today"
                state.close_run(s, run, "failed", now)
        ctx.relay.kick()

    # admission
    def _admit(self, mine: set[str]) -> list[tuple[str, str]]:
        ctx = self.ctx
        now = ctx.clock()
        limits = ctx.settings.limits
        admitted: list[tuple[str, str]] = []
        with ctx.sessions.begin() as s:
            if not _take_lock(s, ctx.instance, now):
                return []
            self._cancel_queued(s, now)
            busy = s.scalars(select(Task).where(Task.phase.in_(BUSY), Task.state.not_in(state.FINAL))).all()
            # A snapshot step whose snapshotter died: take it over (finding its snapshot by name).
            for task in busy:
                if (
                    task.phase == "snapshot"
                    and task.id not in mine
                    and task.updated_at < now - STALE_SNAPSHOT
                ):
                    task.updated_at = now
                    task.generation += 1
                    runlog.write(
                        s, task.run_id, f"{task.vm_name}: snapshot step taken over", now, task_id=task.id
                    )
                    admitted.append((task.run_id, task.id))
            jobs = _jobs_of(s, {t.run_id for t in busy})
            open_vms = ledger.open_vms(s)
            count = Usage.of(busy, jobs)
            capacity = mover_streams(s, now, ctx.settings.heartbeat_interval)
            slowed = _throttles(s, now)
            waiting = s.execute(
                select(Task, Run.job_id)
                .join(Run, Run.id == Task.run_id)
                .where(Task.state == "queued", Task.phase == "queued", Run.state == "running")
                .order_by(Run.created_at, Run.id, Task.vm_name, Task.id)
            ).all()
            job_limits = {j.id: _job_limit(j, limits.vms_per_job) for j in s.scalars(select(Job))}
            for task, job_id in waiting:
                if task.not_before is not None and task.not_before > now:
                    continue
                vm = (task.vcenter, task.vm_moref)
                reason = None
                if vm in count.vms or vm in open_vms:
                    other = count.vms.get(vm)
                    reason = (
                        f"waiting for the backup of this VM by run {other} to end"
                        if other and other != task.run_id
                        else "waiting for the VM's earlier snapshot to be removed"
                    )
                elif job_limits.get(job_id, 0) and count.jobs[job_id] >= job_limits[job_id]:
                    reason = f"waiting: at most {job_limits[job_id]} VMs of this job at once"
                elif count.total >= capacity:
                    reason = (
                        "waiting for a mover (none is running)"
                        if capacity == 0
                        else f"waiting for a mover ({capacity} streams, all busy)"
                    )
                else:
                    reason = count.blocked(task, limits, slowed)
                if reason is not None:
                    if task.wait_reason != reason:
                        if _kind(task.wait_reason) != _kind(reason):
                            runlog.write(s, task.run_id, f"{task.vm_name}: {reason}", now, task_id=task.id)
                        task.wait_reason = reason
                    continue
                task.phase, task.state = "snapshot", "running"
                task.wait_reason, task.not_before = None, None
                task.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.snapshot_timeout)
                task.updated_at = now
                task.generation += 1
                count.add(task, job_id)
                admitted.append((task.run_id, task.id))
        return admitted

    def _cancel_queued(self, s: Session, now: datetime) -> None:
        """A cancelled run's waiting VMs end at once (they have no snapshot to remove)."""
        rows = s.scalars(
            select(Task)
            .join(Run, Run.id == Task.run_id)
            .where(Task.state == "queued", Run.cancel_requested.is_(True))
        ).all()
        for task in rows:
            state.end_task(s, task, "cancelled", now, "cancelled by request")


def _ahead_of(s: Session, run: Run) -> str | None:
    """A run of the same job that goes first: one already running, or one queued earlier."""
    others = s.scalars(
        select(Run).where(
            Run.job_id == run.job_id,
            Run.id != run.id,
            Run.state.not_in(state.RUN_FINAL),
            Run.finished_at.is_(None),
        )
    ).all()
    first = [o for o in others if o.state == "running" or (o.created_at, o.id) < (run.created_at, run.id)]
    return min(first, key=lambda o: (o.created_at, o.id)).id if first else None


def _take_lock(s: Session, holder: str, now: datetime) -> bool:
    """The dispatch lock: an UPDATE of its one row (the row lock on PostgreSQL, the write lock
    on SQLite) held to the end of the transaction; made on first use."""
    done = s.execute(update(DispatchLock).where(DispatchLock.id == 1).values(holder=holder, taken_at=now))
    if done.rowcount == 1:  # type: ignore[attr-defined]
        return True
    try:
        with s.begin_nested():
            s.add(DispatchLock(id=1, holder=holder, taken_at=now))
        return True
    except IntegrityError:
        return False  # another dispatcher made it at this instant: next pass


def _jobs_of(s: Session, run_ids: set[str]) -> dict[str, str]:
    if not run_ids:
        return {}
    return {str(r): str(j) for r, j in s.execute(select(Run.id, Run.job_id).where(Run.id.in_(run_ids)))}


def _job_limit(job: Job, default: int) -> int:
    own = (job.options or {}).get("max_parallel_vms")
    return int(own) if own else default


def _kind(reason: str | None) -> str:
    """A reason without its counts, so the log says when it changes, not every tick."""
    return (reason or "").split("(", 1)[0].strip()


def mover_streams(s: Session, now: datetime, heartbeat_interval: float) -> int:
    """The disk streams of every live mover (a heartbeat within three intervals)."""
    fresh = now - timedelta(seconds=3 * heartbeat_interval)
    total = s.scalar(
        select(func.coalesce(func.sum(ServiceInstance.capacity), 0)).where(
            ServiceInstance.service == "mover",
            ServiceInstance.state == "running",
            ServiceInstance.seen_at >= fresh,
        )
    )
    return int(total or 0)


def _throttles(s: Session, now: datetime) -> dict[str, tuple[int, float]]:
    """Datastores slowed down by latency control; a limit no mover has confirmed for
    THROTTLE_STALE (every mover that measured it is gone) no longer counts."""
    rows = s.scalars(select(Throttle).where(Throttle.updated_at >= now - THROTTLE_STALE))
    return {t.resource: (t.limit_now, t.latency_ms) for t in rows}


@dataclass
class Usage:
    """What the VMs being backed up now hold: per VM, job, datastore and host."""

    total: int = 0
    vms: dict[tuple[str, str], str] = field(default_factory=dict)  # -> its run
    jobs: Counter[str] = field(default_factory=Counter)
    datastores: Counter[str] = field(default_factory=Counter)
    hosts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, busy: Any, jobs: dict[str, str]) -> Usage:
        usage = cls()
        for task in busy:
            usage.add(task, jobs.get(task.run_id, ""))
        return usage

    def add(self, task: Task, job_id: str) -> None:
        self.total += 1
        self.vms[(task.vcenter, task.vm_moref)] = task.run_id
        self.jobs[job_id] += 1
        for ds in task.datastores or []:
            self.datastores[leases.datastore(task.vcenter, ds)] += 1
        if task.host:
            self.hosts[leases.host(task.vcenter, task.host)] += 1

    def blocked(self, task: Task, limits: Any, slowed: dict[str, tuple[int, float]]) -> str | None:
        """Why a snapshot of this VM would break a limit now, or None."""
        # A VM admitted on a datastore must find a stream there: the stream limit caps it too.
        caps = [n for n in (limits.snapshots_per_datastore, limits.streams_per_datastore) if n]
        per_datastore = min(caps) if caps else 0
        for ds in task.datastores or []:
            key = leases.datastore(task.vcenter, ds)
            if per_datastore and self.datastores[key] >= per_datastore:
                held = self.datastores[key]
                return f"waiting for a snapshot slot on datastore {ds} ({held} of {per_datastore})"
            if key in slowed and self.datastores[key] >= slowed[key][0]:
                limit, latency = slowed[key]
                return (
                    f"waiting: datastore {ds} is slow ({latency:.0f} ms to first byte), so it serves"
                    f" {limit} stream(s) until it recovers"
                )
        if task.host:
            key = leases.host(task.vcenter, task.host)
            if limits.snapshots_per_host and self.hosts[key] >= limits.snapshots_per_host:
                return (
                    f"waiting for a snapshot slot on host {task.host}"
                    f" ({self.hosts[key]} of {limits.snapshots_per_host})"
                )
        return None
