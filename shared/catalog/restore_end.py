"""How a restore ends: `end_restore` is the one place (the mover's handler, and the notifier's
watchdog when a mover went quiet), as `shared/catalog/tasks.py` is for tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog.alerts import raise_alert
from shared.catalog.restores import FINAL
from shared.catalog.tasks import close_run
from shared.clock import aware
from shared.contracts import RUN_FINAL, RestoreDone
from shared.db.models import Restore, Run
from shared.observe.metrics import RESTORE_DURATION
from shared.observe.oncommit import after_commit
from shared.runtime.outbox import stage

Outcome = Literal["succeeded", "failed", "cancelled"]


def finish_run(session: Session, restore: Restore, now: datetime) -> None:
    """When `restore` belongs to a run of a restore-test job and was its last to end, end the
    run: succeeded if every test passed, failed if none did, partial otherwise."""
    if not restore.run_id:
        return
    run = session.get(Run, restore.run_id)
    if run is None or run.state in RUN_FINAL:
        return
    states = [r.state for r in session.scalars(select(Restore).where(Restore.run_id == restore.run_id))]
    if any(st not in FINAL for st in states):
        return
    ok = sum(st == "succeeded" for st in states)
    close_run(
        session,
        run,
        "succeeded" if ok == len(states) and not run.error else "failed" if ok == 0 else "partial",
        now,
    )


def alert_failed(session: Session, restore: Restore, error: str | None, now: datetime) -> None:
    """The `restore_failed` alert of a restore that ended failed (once per restore)."""
    name = restore.target.get("name")
    raise_alert(
        session,
        key=f"restore-failed:{restore.id}",
        kind="restore_failed",
        severity="error",
        message=f"restore {restore.id} of {restore.restore_point_id} as VM {name!r} failed: {error}",
        now=now,
        vm_name=str(name),
        run_id=restore.run_id,  # a restore test's: its run's message tells it
    )


def end_restore(
    session: Session,
    restore: Restore,
    outcome: Outcome,
    error: str | None,
    now: datetime,
    *,
    vm_moref: str | None = None,
    bytes_done: int | None = None,
    running: bool = False,
) -> None:
    """The one place a restore ends (`outcome`: succeeded, failed or cancelled): the row's state,
    `vbm.restore.done` staged, the run of a restore test ended when it was its last, the alert of
    a failure. `running`: an instant VM now runs from the backup store (phase `instant`, and it
    keeps `created`: stopping it removes those things); else whatever was made is gone (or named
    in `error`). The caller checks that it still owns the restore (generation, not ended)."""
    restore.state, restore.error, restore.vm_moref = outcome, error, vm_moref
    restore.phase = "instant" if running else "done"
    restore.finished_at = restore.updated_at = now
    if bytes_done is not None:
        restore.bytes_done = bytes_done
    # an ended restore shows its average rate (as a finished task does), not the last instant's
    elapsed = (now - aware(restore.started_at)).total_seconds() if restore.started_at else 0.0
    restore.rate = restore.bytes_done / elapsed if elapsed > 0 and restore.bytes_done else 0.0
    if not running:
        restore.created = {}
    took = (now - aware(restore.started_at or restore.created_at)).total_seconds()
    timed = RESTORE_DURATION.labels(vcenter=restore.vcenter, mode=restore.mode, outcome=outcome)
    after_commit(session, lambda: timed.observe(max(took, 0.0)))
    stage(
        session,
        RestoreDone(
            occurred_at=now,
            restore_id=restore.id,
            restore_point_id=restore.restore_point_id,
            state=outcome,
            vm_name=str(restore.target.get("name", "")),
            vm_moref=vm_moref,
            error=error,
        ),
        now,
    )
    finish_run(session, restore, now)
    if outcome == "failed":
        alert_failed(session, restore, error, now)
