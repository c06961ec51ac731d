"""Notifier: the watchdog that makes sure no snapshot is left behind, and the alerts.

* `vbm.step.failed`: end the task as failed, remove its snapshot, raise an alert.
* `vbm.bus.rejected`: a message no worker could process: raise an alert.
* Watchdog (every `watchdog_interval`): a task past its deadline (no progress in transfer, a
  snapshot create or a verify that takes too long, a frozen or dead worker) is failed the same
  way; runs still queued after a minute are re-driven (the stream may have lost the event).
* Sweeper: every open ledger entry whose task has ended is removed, with retries and backoff;
  one that cannot be removed raises an alert naming the VM.
All deadlines live in the database, so the notifier's own restarts lose nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared.catalog import audit, ledger, replication, runlog
from shared.catalog import events as eventlog
from shared.catalog import tasks as state
from shared.catalog.alerts import raise_alert
from shared.catalog.restore_end import end_restore
from shared.catalog.restores import FINAL as RESTORE_FINAL
from shared.contracts import (
    BusRejected,
    Event,
    RestoreRequested,
    Step,
    StepFailed,
    Subject,
    event_type_for,
)
from shared.db.models import Job, Outbox, Restore, Run, SnapshotLedger, Task
from shared.model.audit import system
from shared.notify import log as notify_log
from shared.pipeline.cleanup import remove_entries, remove_one
from shared.pipeline.restores import clean as clean_restore
from shared.runtime.bus import Delivery
from shared.runtime.outbox import stage
from shared.runtime.service import Context
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)

REDRIVE_AFTER = timedelta(seconds=60)


@dataclass
class Deps:
    ctx: Context
    vcenters: VCenters
    trimmed_at: datetime | None = None  # when the notification log was last trimmed


async def on_step_failed(event: StepFailed, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    ctx = deps.ctx
    now = ctx.clock()
    vm_name = None
    where = ""  # the VM's vCenter: names repeat across vCenters
    retry = False
    keep: str | None = None  # the snapshot of the task's try in progress, if it has one
    with ctx.sessions.begin() as s:
        task = s.get(Task, event.task_id) if event.task_id else None
        earlier = (  # the failure of a try that is over (redelivered, or late): its snapshot goes, no more
            task is not None
            and task.state not in state.FINAL
            and event.snapshot_moref is not None
            and task.snapshot_moref != event.snapshot_moref
        )
        if task is not None and earlier:
            vm_name = task.vm_name
            retry = True  # nothing to tell: the task's fate is decided elsewhere
            if task.phase in ("snapshot", "transfer"):
                keep = ledger.snapshot_name(task.run_id, task.tries)
        elif task is not None:
            vm_name, where = task.vm_name, f" on vCenter {task.vcenter}"
            if event.reason.startswith("cancelled"):
                state.end_task(s, task, "cancelled", now, event.reason)
            else:  # another try if one is left; its snapshot goes all the same (below)
                policy = _policy(ctx, s, task)
                outcome = state.try_failed(
                    s, task, step=event.step, reason=event.reason, now=now, policy=policy
                )
                retry = outcome == "retry"
        elif event.task_id is None:
            run = s.get(Run, event.run_id)
            if run is not None and run.state in ("queued", "running"):
                run.error = event.reason[:4000]
                state.close_run(s, run, "failed", now)
        if not event.reason.startswith("cancelled") and not retry:
            raise_alert(
                s,
                key=f"step-failed:{event.run_id}:{event.task_id}",
                kind="backup-failed",
                severity="error",
                vm_name=vm_name,
                run_id=event.run_id,
                now=now,
                message=f"backup of {vm_name or 'run ' + event.run_id}{where} failed in {event.step}:"
                f" {event.reason}",
            )
    ctx.relay.kick()
    if event.task_id:
        await remove_entries(ctx, deps.vcenters, task_id=event.task_id, keep=keep)
    return []


async def on_bus_rejected(event: BusRejected, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    ctx = deps.ctx
    with ctx.sessions.begin() as s:
        raise_alert(
            s,
            key=f"bus-rejected:{event.consumer}:{event.stream_seq}",
            kind="bus-rejected",
            severity="error",
            now=ctx.clock(),
            message=f"{event.consumer} gave up on message {event.stream_seq} ({event.subject})"
            f" after {event.deliveries} deliveries: {event.reason}",
        )
    ctx.relay.kick()
    return []


async def watchdog(deps: Deps) -> None:
    ctx = deps.ctx
    while not ctx.stop.is_set():
        try:
            await asyncio.to_thread(overdue_tasks, ctx)
            ctx.relay.kick()
            await sweep(deps)
            await overdue_restores(deps)
            await asyncio.to_thread(_replications_due, ctx)
            now = ctx.clock()
            if deps.trimmed_at is None or now - deps.trimmed_at > timedelta(hours=1):
                await asyncio.to_thread(_trim_notifications, ctx)
                deps.trimmed_at = now
        except Exception:
            log.exception("watchdog round failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), ctx.settings.pipeline.watchdog_interval)


def _trim_notifications(ctx: Context) -> None:
    with ctx.sessions.begin() as s:
        gone = notify_log.trim_log(s, ctx.clock())
        lines = runlog.trim(s, ctx.clock())
        events = eventlog.trim(s, ctx.clock())
    if events:
        log.info("trimmed %d event log row(s)", events)
    if lines:
        log.info("trimmed %d run log line(s)", lines)
    if gone:
        log.info("notification log: %d deliveries older than %s forgotten", gone, notify_log.KEEP_LOG)


def overdue_tasks(ctx: Context) -> int:
    """Fail every task past its deadline (staging StepFailed); re-drive runs left queued."""
    now = ctx.clock()
    failed = 0
    with ctx.sessions.begin() as s:
        late = s.scalars(select(Task).where(Task.state.not_in(state.FINAL), Task.deadline_at < now)).all()
        for task in late:
            reason = (
                f"deadline passed in phase {task.phase}: no progress since"
                f" {task.updated_at:%Y-%m-%d %H:%M:%S} UTC (worker stopped, frozen or vCenter stuck)"
            )
            phases: dict[str, Step] = {"transfer": "transfer", "verify": "verify"}
            step = phases.get(task.phase, "snapshot")
            state.fail_task(s, task, step=step, reason=reason, now=now, policy=_policy(ctx, s, task))
            failed += 1
        # Queued runs need no re-drive: the snapshotter's dispatcher plans them from the database.
        _redrive_tasks(ctx, s, now)
    return failed


def _policy(ctx: Context, s: Session, task: Task) -> state.RetryPolicy:
    run = s.get(Run, task.run_id)
    return state.RetryPolicy.of(ctx.settings, s.get(Job, run.job_id) if run is not None else None)


def _claim_overdue_restores(ctx: Context) -> list[tuple[str, int, str, dict[str, str], str]]:
    """Take over restores past their deadline (generation + 1, so the old mover is fenced off);
    re-send restores still queued after a minute (the mover may have missed them)."""
    now = ctx.clock()
    claimed = []
    with ctx.sessions.begin() as s:
        late = s.scalars(
            select(Restore).where(Restore.state.not_in(RESTORE_FINAL), Restore.deadline_at < now)
        )
        for row in late.all():
            reason = (
                f"the mover stopped making progress in phase {row.phase} (last at"
                f" {row.updated_at:%Y-%m-%d %H:%M:%S} UTC)"
            )
            if row.mode == "in_place":
                reason += (
                    f"; VM {row.target.get('name')}'s disks may be partly overwritten and it may be left"
                    " powered off: run the in-place restore again, or restore as a new VM"
                )
            row.generation += 1
            row.phase = "cleaning_up"
            row.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.transfer_stall)
            claimed.append((row.id, row.generation, row.vcenter, dict(row.created), reason))
        for row in s.scalars(
            select(Restore).where(Restore.state == "queued", Restore.created_at < now - REDRIVE_AFTER)
        ):
            last = _latest(s, Subject.RESTORE_REQUESTED, f'"restore_id":"{row.id}"')
            if last is None or last.created_at < now - REDRIVE_AFTER:
                attempt = 1 + int(last.msg_id.rsplit(":", 1)[-1]) if last is not None else 1
                again = RestoreRequested(
                    occurred_at=now, restore_id=row.id, restore_point_id=row.restore_point_id, attempt=attempt
                )
                stage(s, again, now)
    return claimed


async def overdue_restores(deps: Deps) -> None:
    """End restores whose mover went quiet: remove what they made, fail them, raise an alert."""
    ctx = deps.ctx
    for restore_id, generation, vcenter, created, reason in await asyncio.to_thread(
        _claim_overdue_restores, ctx
    ):
        error = reason
        try:
            await asyncio.to_thread(clean_restore, deps.vcenters.get(vcenter), created)
        except Exception as exc:  # any failure: the restore still ends, and the error says what is left
            error = f"{reason}; cleaning up failed: {exc} (remove {created} by hand)"
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            row = s.get(Restore, restore_id)
            if row is None or row.generation != generation or row.state in RESTORE_FINAL:
                continue
            end_restore(s, row, "failed", error, now)
        log.warning("restore %s failed by the watchdog: %s", restore_id, error)
    ctx.relay.kick()


def _replications_due(ctx: Context) -> None:
    """Re-send replications whose retry time came, and those whose mover went quiet."""
    stalled = timedelta(seconds=max(ctx.settings.pipeline.transfer_stall, 3 * ctx.settings.pipeline.ack_wait))
    with ctx.sessions.begin() as s:
        if replication.due(s, ctx.clock(), stalled):
            ctx.relay.kick()


def _latest(s: Session, subject: Subject, needle: str) -> Outbox | None:
    """The newest staged event on `subject` whose payload holds `needle`."""
    query = select(Outbox).where(Outbox.subject == subject.value, Outbox.payload.contains(needle))
    return s.scalars(query.order_by(Outbox.id.desc()).limit(1)).first()


REDRIVE: dict[str, Subject] = {"transfer": Subject.SNAPSHOT_READY, "verify": Subject.TRANSFER_DONE}


def _redrive_tasks(ctx: Context, s: Session, now: datetime) -> None:
    """Re-send the event of a task that went quiet (the stream may have lost it).

    A mover writes progress every second, so a task quiet for half its stall allowance (and
    longer than a redelivery would take) has no worker: the event is staged again as a new
    attempt. Handlers are fenced by phase, so a worker that was only slow loses nothing.
    """
    p = ctx.settings.pipeline
    quiet = timedelta(seconds=max(p.transfer_stall / 2, 3 * p.ack_wait))
    for task in s.scalars(
        select(Task).where(
            Task.state == "running", Task.phase.in_(list(REDRIVE)), Task.updated_at < now - quiet
        )
    ):
        row = _latest(s, REDRIVE[task.phase], f'"task_id":"{task.id}"')
        if row is None or row.created_at >= now - quiet:
            continue  # nothing to re-send, or re-sent recently
        event = event_type_for(row.subject).model_validate_json(row.payload)
        attempt = int(getattr(event, "attempt", 1)) + 1
        stage(s, event.model_copy(update={"attempt": attempt, "occurred_at": now}), now)
        task.updated_at = now
        log.warning(
            "re-driving task %s in phase %s (attempt %d): no progress for %s",
            task.id,
            task.phase,
            attempt,
            quiet,
        )


async def sweep(deps: Deps) -> None:
    """Remove the snapshots of ended tasks that are still open in the ledger."""
    ctx = deps.ctx
    now = ctx.clock()
    with ctx.sessions() as s:
        rows = s.execute(
            select(SnapshotLedger.snapshot_name, SnapshotLedger.vcenter, SnapshotLedger.vm_moref)
            .join(Task, Task.id == SnapshotLedger.task_id, isouter=True)
            .where(
                SnapshotLedger.state.in_(ledger.OPEN),
                or_(SnapshotLedger.next_attempt_at.is_(None), SnapshotLedger.next_attempt_at <= now),
                # ended, past its transfer, or waiting for another try (a queued task owns no snapshot)
                or_(
                    Task.id.is_(None),
                    Task.state.in_(state.FINAL),
                    Task.phase.in_(("verify", "done", "queued")),
                ),
            )
        ).all()
    for name, vcenter, moref in rows:
        if await remove_one(ctx, deps.vcenters, name, vcenter, moref):
            await asyncio.to_thread(
                audit.try_append, ctx.sessions, actor=system(ctx.service), action="snapshot.cleanup",
                target=f"vm:{vcenter}/{moref}", params={"snapshot": name, "why": "its task ended"},
            )  # fmt: skip
