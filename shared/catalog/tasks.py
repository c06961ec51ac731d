"""Run and task state, changed only through these functions.

Task phases: queued -> snapshot -> transfer -> verify -> done. A task waits in `queued` (state
`queued`, with its `wait_reason`) until the dispatcher admits it (docs/design.md, "Scheduling of
work"); it ends `succeeded`, `failed` or `cancelled`, and a try that fails may send it back to
`queued` for another try (`try_failed`). Every change names the phase it expects; a change whose
expectation no longer holds (another worker or the watchdog moved on) raises `Stale` and writes
nothing, so an ack is never treated as a lock.

A run ends `succeeded` (every VM, none with a warning), `warning` (every VM, some with warnings:
a quiesce that fell back to crash-consistent, a disk skipped, a disk resized), `partial`,
`failed` or `cancelled`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.catalog import runlog
from shared.contracts import RUN_FINAL, TASK_FINAL, RunFinished, RunState, Step, StepFailed
from shared.db.eventlog import record_task
from shared.db.models import Job, Run, SnapshotLedger, Task
from shared.observe import metrics
from shared.observe.oncommit import after_commit
from shared.runtime.outbox import stage

FINAL = TASK_FINAL
__all__ = ["FINAL", "RUN_FINAL", "RetryPolicy", "RunState", "Stale"]


class Stale(Exception):
    """The task is no longer where this worker thinks it is: drop the work."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often a VM that fails is tried again within its run, and how long after."""

    retries: int = 0
    wait: float = 0.0

    @classmethod
    def of(cls, settings: Any, job: Job | None) -> RetryPolicy:
        options = (job.options or {}) if job is not None else {}
        retries = options.get("retries")
        return cls(
            retries=int(settings.pipeline.retries if retries is None else retries),
            wait=float(settings.pipeline.retry_wait),
        )


def task_id_for(run_id: str, vcenter: str, vm_moref: str) -> str:
    """`<run>.<vcenter>:<moref>`: morefs repeat across vCenters, a run may span several."""
    return f"{run_id}.{vcenter}:{vm_moref}"


def move(
    session: Session,
    task_id: str,
    *,
    expect: str,
    now: datetime,
    generation: int | None = None,
    **changes: Any,
) -> None:
    """Set fields of a task that is in phase `expect` (and, given, still at `generation`: nobody
    took it over) and not finished; else raise Stale."""
    query = update(Task).where(Task.id == task_id, Task.phase == expect, Task.state.not_in(FINAL))
    if generation is not None:
        query = query.where(Task.generation == generation)
    result = session.execute(
        query.values(updated_at=now, generation=Task.generation + 1, **changes).execution_options(
            synchronize_session=False
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Stale(f"task {task_id} is no longer in phase {expect}")
    if "phase" in changes or "state" in changes:
        record_task(session, task_id)  # a bulk update: the event log's listener does not see it


def warn(session: Session, task: Task, message: str, now: datetime) -> None:
    """Note something that did not stop the backup but makes its outcome a warning."""
    if message not in (task.warnings or []):
        task.warnings = [*(task.warnings or []), message]
        runlog.write(
            session, task.run_id, f"{task.vm_name}: {message}", now, task_id=task.id, level="warning"
        )


def end_task(session: Session, task: Task, state: str, now: datetime, error: str | None = None) -> bool:
    """Finish a task (if it is not finished yet); True when this call finished it."""
    if task.state in FINAL:
        return False
    task.state = state
    task.error = error if error is None else error[:4000]
    task.finished_at = now
    task.updated_at = now
    task.deadline_at = None
    task.wait_reason = None
    if state == "succeeded":
        task.phase = "done"
    _count(session, task, state)
    level: runlog.Level = "info" if state == "succeeded" else "warning" if state == "cancelled" else "error"
    outcome = "warning" if state == "succeeded" and task.warnings else state
    runlog.write(
        session, task.run_id, f"{task.vm_name}: {outcome}" + (f": {error}" if error else ""), now,
        task_id=task.id, level=level,
    )  # fmt: skip
    finish_run_if_done(session, task.run_id, now)
    return True


def _count(session: Session, task: Task, state: str) -> None:
    """backup_success_total / backup_failure_total, once the task's end is committed."""
    counter = {"succeeded": metrics.BACKUP_SUCCESS, "failed": metrics.BACKUP_FAILURE}.get(state)
    if counter is None:
        return
    run = session.get(Run, task.run_id)
    job = session.get(Job, run.job_id) if run is not None else None
    labels = {
        "job": job.name if job is not None else "",
        "vm": task.vm_name,
        "vcenter": task.vcenter,
        "repository": job.repository if job is not None else "",
    }
    after_commit(session, lambda: counter.labels(**labels).inc())


def try_failed(
    session: Session, task: Task, *, step: Step, reason: str, now: datetime, policy: RetryPolicy
) -> Literal["retry", "failed", "ended"]:
    """A try of the task failed. With tries left (and the run not cancelled) it goes back to
    `queued` for another try after `policy.wait`: its snapshot is removed by the sweeper (a queued
    task owns none) and the dispatcher admits it again only once that removal is done, so a retry
    never opens a second snapshot while the first is open. Else the task ends `failed`."""
    if task.state in FINAL:
        return "ended"
    run = session.get(Run, task.run_id)
    if task.tries <= policy.retries and not (run is not None and run.cancel_requested):
        again = now + timedelta(seconds=policy.wait)
        runlog.write(
            session, task.run_id,
            f"{task.vm_name}: try {task.tries} of {policy.retries + 1} failed in {step}: {reason};"
            f" trying again after {again:%H:%M:%S} UTC",
            now, task_id=task.id, level="warning",
        )  # fmt: skip
        task.tries += 1
        task.phase, task.state = "queued", "queued"
        task.not_before, task.deadline_at, task.updated_at = again, None, now
        task.wait_reason = f"try {task.tries} of {policy.retries + 1}, after {again:%H:%M:%S} UTC: {reason}"
        task.error = reason[:4000]
        task.snapshot_moref = None
        task.bytes_done = task.bytes_total = 0
        task.rate = 0.0
        task.generation += 1  # fences every worker of the failed try
        return "retry"
    end_task(session, task, "failed", now, reason)
    return "failed"


def finish_run_if_done(session: Session, run_id: str, now: datetime) -> Run | None:
    """When every task of the run has ended, end the run with the right state."""
    session.flush()
    # The run's row first (PostgreSQL: locked to the end of the transaction), so that two tasks
    # ending at the same moment in two transactions cannot each see the other unfinished.
    run = session.scalar(select(Run).where(Run.id == run_id).with_for_update())
    if run is None or run.state in RUN_FINAL:
        return None
    tasks = list(session.execute(select(Task.state, Task.warnings).where(Task.run_id == run_id)).all())
    states = [t for t, _ in tasks]
    if not states or any(s not in FINAL for s in states):
        return None
    if snapshots_being_removed(session, run_id):
        return None  # the removal ends the run (shared/pipeline/cleanup.py): a done run has no snapshot
    state: RunState
    if all(s == "succeeded" for s in states):
        # warnings of a VM, or of the run (a vCenter whose selectors could not be resolved)
        state = "warning" if any(w for _, w in tasks) or run.error else "succeeded"
    elif run.cancel_requested and all(s in ("cancelled", "succeeded") for s in states):
        state = "cancelled"
    elif any(s == "succeeded" for s in states):
        state = "partial"
    else:
        state = "failed"
    failed = [s for s in states if s != "succeeded"]
    if failed and not run.error:
        run.error = f"{len(failed)} of {len(states)} VMs did not back up"
    close_run(session, run, state, now)
    return run


def snapshots_being_removed(session: Session, run_id: str) -> int:
    """Snapshots of the run that exist and whose first removal is due or under way. A run ends
    after them, so that "succeeded" means no snapshot of it is left; one whose removal has failed
    no longer holds the run (the sweeper goes on trying, and raises an alert when it gives up)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(SnapshotLedger)
            .where(
                SnapshotLedger.run_id == run_id,
                SnapshotLedger.state.in_(("created", "removing")),
                SnapshotLedger.attempts == 0,
            )
        )
        or 0
    )


def close_run(session: Session, run: Run, state: RunState, now: datetime) -> None:
    """End `run` in `state` and stage its `RunFinished` (notifications) in the same transaction."""
    run.state = state
    run.finished_at = now
    run.wait_reason = None
    runlog.write(session, run.id, f"run {state}" + (f": {run.error}" if run.error else ""), now)
    stage(session, RunFinished(occurred_at=now, run_id=run.id, job_id=run.job_id, state=state), now)


def fail_task(
    session: Session, task: Task, *, step: Step, reason: str, now: datetime, policy: RetryPolicy
) -> bool:
    """A try failed where no StepFailed was sent yet (the snapshotter, the watchdog): another try
    if one is left (True), else `StepFailed` is staged (naming its open snapshot, for the
    notifier's clean-up and alert) and the task ends failed (False)."""
    from shared.catalog.ledger import open_entries

    if try_failed(session, task, step=step, reason=reason, now=now, policy=policy) == "retry":
        return True
    entries = open_entries(session, task.id)
    stage(
        session,
        StepFailed(
            occurred_at=now,
            run_id=task.run_id,
            task_id=task.id,
            step=step,
            reason=reason,
            vcenter=task.vcenter,
            vm_moref=task.vm_moref,
            snapshot_moref=entries[0].snapshot_moref if entries else None,
        ),
        now,
    )
    return False
