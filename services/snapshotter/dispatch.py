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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.snapshotter.limits import Usage, job_limit, mover_streams, throttles
from shared.catalog import ledger, runlog
from shared.catalog import tasks as state
from shared.db.eventlog import record_run
from shared.db.models import Job, Run, Task
from shared.db.work import DispatchLock
from shared.runtime.service import Context

log = logging.getLogger(__name__)

BUSY = ("snapshot", "transfer")  # phases that hold a mover stream and an open snapshot
STALE_SNAPSHOT = timedelta(seconds=60)  # a snapshot step this quiet lost its snapshotter
REPLAN_AFTER = timedelta(minutes=10)  # a run claimed for planning that long without tasks
REPAIR_EVERY = 30  # passes between two looks for runs to repair


@dataclass(frozen=True)
class Placed:
    """A VM as planning found it: where it lives, for the limits."""

    vcenter: str
    moref: str
    name: str
    host: str | None = None
    datastores: tuple[str, ...] = ()


Resolve = Callable[[Job], Awaitable[tuple[list[Placed], list[str]]]]  # VMs, what could not be read
Snapshot = Callable[[str, str], Awaitable[None]]


@dataclass
class Dispatcher:
    ctx: Context
    resolve: Resolve
    snapshot: Snapshot
    kicked: asyncio.Event = field(default_factory=asyncio.Event)
    working: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    planning: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    passes: int = 0
    told: set[tuple[str, int]] = field(default_factory=set)  # (task, try) whose wait was logged

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
        pending = [*self.working.values(), *self.planning.values()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _wake(self) -> None:
        stop = asyncio.ensure_future(self.ctx.stop.wait())
        kick = asyncio.ensure_future(self.kicked.wait())
        try:
            await asyncio.wait((stop, kick), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            kick.cancel()

    async def once(self) -> None:
        # Planning reads vCenters (seconds for a big one): it runs beside admission, not before it.
        for run_id, job_id in await asyncio.to_thread(self._startable):
            if run_id not in self.planning:
                self.planning[run_id] = asyncio.create_task(self._planned(run_id, job_id))
        admitted = await asyncio.to_thread(self._admit, set(self.working))
        for run_id, task_id in admitted:
            self.working[task_id] = asyncio.create_task(self._snapshot(run_id, task_id))
        self.passes += 1
        if self.passes % REPAIR_EVERY == 0:
            await asyncio.to_thread(self._repair)

    async def _planned(self, run_id: str, job_id: str) -> None:
        try:
            await self._plan(run_id, job_id)
        except Exception:
            log.exception("planning run %s failed", run_id)
        finally:
            self.planning.pop(run_id, None)
            self.kick()

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
        """Claim the run (queued -> running, a compare-and-set: one snapshotter plans it), then
        resolve its VMs and make its tasks. A run left claimed without tasks (its snapshotter
        died while planning) goes back to queued (`_repair`)."""
        ctx = self.ctx
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            claimed = s.execute(
                update(Run)
                .where(Run.id == run_id, Run.state == "queued")
                .values(state="running", started_at=now, wait_reason="planning: reading the VMs")
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return  # another snapshotter planned it
            record_run(s, run_id, job_id, "running", "queued")  # a bulk update: not seen by the listener
            job = s.get(Job, job_id)
            if job is None:
                return
            s.expunge(job)
        try:
            vms, trouble = await self.resolve(job)
        except Exception as exc:  # the run cannot even be planned: it fails, saying why
            log.warning("run %s: planning failed: %s", run_id, exc)
            with ctx.sessions.begin() as s:
                run = s.get(Run, run_id)
                if run is not None and run.state == "running":
                    run.error = f"cannot resolve the job's VMs: {exc}"[:4000]
                    state.close_run(s, run, "failed", ctx.clock())
            ctx.relay.kick()
            return
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            run = s.get(Run, run_id)
            if run is None or run.state != "running":
                return
            run.wait_reason = None
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
            names = ", ".join(v.name for v in vms[:20]) + (f" and {len(vms) - 20} more" * (len(vms) > 20))
            runlog.write(s, run_id, f"run started: {len(vms)} VM(s): {names}", now)
            for line in trouble:  # a vCenter (or its tags) that could not be read: the run warns
                runlog.write(s, run_id, line, now, level="warning")
                run.error = (f"{run.error}; {line}" if run.error else line)[:4000]
            if not vms:
                run.error = run.error or "the job's selection holds no VM today"
                state.close_run(s, run, "failed", now)
        ctx.relay.kick()

    def _repair(self) -> None:
        """Runs whose planning died (claimed, no task for a while) are planned again; running runs
        whose tasks have all ended are closed (the last two ended at the same moment)."""
        ctx = self.ctx
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            running = s.scalars(select(Run).where(Run.state == "running")).all()
            for run in running:
                if run.id in self.planning:
                    continue
                states = list(s.scalars(select(Task.state).where(Task.run_id == run.id)))
                if not states and run.started_at is not None and run.started_at < now - REPLAN_AFTER:
                    job = s.get(Job, run.job_id)
                    if job is not None and not (job.options or {}).get("restore_test"):
                        run.state, run.started_at, run.wait_reason = "queued", None, None
                        runlog.write(
                            s, run.id, "planning did not finish: planning again", now, level="warning"
                        )
                elif states and all(st in state.FINAL for st in states):
                    state.finish_run_if_done(s, run.id, now)

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
            timeout = timedelta(seconds=ctx.settings.pipeline.snapshot_timeout)
            for task in busy:
                if (
                    task.phase == "snapshot"
                    and task.id not in mine
                    and task.updated_at < now - STALE_SNAPSHOT
                    and _may_take_over(s, task, now, timeout)
                ):
                    task.updated_at = now
                    task.generation += 1
                    runlog.write(
                        s, task.run_id, f"{task.vm_name}: snapshot step taken over", now, task_id=task.id
                    )
                    admitted.append((task.run_id, task.id))
            jobs = _jobs_of(s, {t.run_id for t in busy})
            open_vms = ledger.open_vms(s)
            busy_ids = {t.id for t in busy}
            removing_ids = {task for _, task in open_vms.values() if task not in busy_ids}
            removing = s.scalars(select(Task).where(Task.id.in_(removing_ids))).all() if removing_ids else []
            all_jobs = s.scalars(select(Job)).all()
            job_limits = {j.id: job_limit(j, limits.vms_per_job) for j in all_jobs}
            repos = {j.id: j.repository for j in all_jobs}
            count = Usage.of(busy, jobs, repos, removing)
            capacity = mover_streams(s, now, ctx.settings.heartbeat_interval)
            slowed = throttles(s, now)
            waiting = s.execute(
                select(Task, Run.job_id)
                .join(Run, Run.id == Task.run_id)
                .where(Task.state == "queued", Task.phase == "queued", Run.state == "running")
                .order_by(Run.created_at, Run.id, Task.vm_name, Task.id)
            ).all()
            for task, job_id in waiting:
                if task.not_before is not None and task.not_before > now:
                    continue
                vm = (task.vcenter, task.vm_moref)
                reason = None
                if open_vms.get(vm, ("",))[0] == "stuck":
                    state.end_task(
                        s, task, "failed", now,
                        "a snapshot vbm made of this VM earlier could not be removed (an alert names it):"
                        " remove it in vCenter (Snapshots > Delete), then run the job again",
                    )  # fmt: skip
                    continue
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
                    reason = count.blocked(task, repos.get(job_id, ""), limits, slowed)
                if reason is not None:
                    if task.wait_reason != reason:
                        if (
                            _kind(task.wait_reason) != _kind(reason)
                            and (task.id, task.tries) not in self.told
                        ):
                            # the first wait of each try of a VM that is not for a mover (not every
                            # change: that would be lines per VM per VM that ends, at real scale)
                            runlog.write(s, task.run_id, f"{task.vm_name}: {reason}", now, task_id=task.id)
                            self.told.add((task.id, task.tries))
                        task.wait_reason = reason
                    continue
                task.phase, task.state = "snapshot", "running"
                task.wait_reason, task.not_before = None, None
                task.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.snapshot_timeout)
                task.updated_at = now
                task.generation += 1
                count.add(task, job_id, repos.get(job_id, ""))
                admitted.append((task.run_id, task.id))
            self.told &= {(t.id, t.tries) for t, _ in waiting if t.state == "queued"}
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


def _may_take_over(s: Session, task: Task, now: datetime, timeout: timedelta) -> bool:
    """A quiet snapshot step is taken over only when no create of its snapshot can still be in
    flight: none was asked for, or it was asked for longer ago than vbm waits for one (and a
    minute more), so that two snapshots of the VM are never made."""
    entry = ledger.get(s, ledger.snapshot_name(task.run_id, task.tries), task.vcenter, task.vm_moref)
    if entry is None or entry.state != "requested":
        return True
    return entry.requested_at < now - timeout - STALE_SNAPSHOT


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


def _kind(reason: str | None) -> str:
    """A reason without its counts, so the log says when it changes, not every tick."""
    return (reason or "").split("(", 1)[0].strip()
