"""Run and task state, changed only through these functions.

Task phases: queued -> snapshot -> transfer -> verify -> done; a task ends `succeeded`, `failed`
or `cancelled`. Every change names the phase it expects; a change whose expectation no longer
holds (another worker or the watchdog moved on) raises `Stale` and writes nothing, so an ack is
never treated as a lock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.contracts import RunFinished, Step, StepFailed
from shared.db.models import Run, Task
from shared.outbox import stage

FINAL = ("succeeded", "failed", "cancelled")


class Stale(Exception):
    """The task is no longer where this worker thinks it is: drop the work."""


def task_id_for(run_id: str, vm_moref: str) -> str:
    return f"{run_id}.{vm_moref}"


def move(session: Session, task_id: str, *, expect: str, now: datetime, **changes: Any) -> None:
    """Set fields of a task that is in phase `expect` and not finished; else raise Stale."""
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.phase == expect, Task.state.not_in(FINAL))
        .values(updated_at=now, generation=Task.generation + 1, **changes)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Stale(f"task {task_id} is no longer in phase {expect}")


def end_task(session: Session, task: Task, state: str, now: datetime, error: str | None = None) -> bool:
    """Finish a task (if it is not finished yet); True when this call finished it."""
    if task.state in FINAL:
        return False
    task.state = state
    task.error = error if error is None else error[:4000]
    task.finished_at = now
    task.updated_at = now
    task.deadline_at = None
    if state == "succeeded":
        task.phase = "done"
    finish_run_if_done(session, task.run_id, now)
    return True


def finish_run_if_done(session: Session, run_id: str, now: datetime) -> Run | None:
    """When every task of the run has ended, end the run with the right state."""
    session.flush()
    run = session.get(Run, run_id)
    if run is None or run.state in ("succeeded", "failed", "partial", "cancelled"):
        return None
    states = list(session.scalars(select(Task.state).where(Task.run_id == run_id)))
    if not states or any(s not in FINAL for s in states):
        return None
    if all(s == "succeeded" for s in states):
        state: RunState = "succeeded"
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


RunState = Literal["succeeded", "partial", "failed", "cancelled"]


def close_run(session: Session, run: Run, state: RunState, now: datetime) -> None:
    """End `run` in `state` and stage its `RunFinished` (notifications) in the same transaction."""
    run.state = state
    run.finished_at = now
    stage(session, RunFinished(occurred_at=now, run_id=run.id, job_id=run.job_id, state=state), now)


def fail_task(session: Session, task: Task, *, step: Step, reason: str, now: datetime) -> None:
    """Stage `StepFailed` for the task (naming its open snapshot, for the clean-up) and end it."""
    from shared.pipeline.ledger import open_entries

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
    end_task(session, task, "failed", now, reason)
