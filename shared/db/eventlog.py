"""The event log (`event_log`): every state change of runs, tasks, restores and replications, and
every alert raised, one row each, written in the transaction of the change itself
(docs/design.md, "Live events").

The rows are captured in one place: a `before_flush` listener on every Session sees the `state`
and `phase` of Run, Task, Restore and Replication objects change (and new Alert rows) and adds a
row to the same flush; the two bulk updates of those columns (`shared/catalog/tasks.py:move`, the
dispatcher's claim of a run) call `record_task` / `record_run` themselves. So no state change is
ever without its row, and a rolled-back change leaves none. The id is the event's SSE id:
`GET /api/v1/events` resumes after it (`Last-Event-ID`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, String, event, inspect, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.db.models import (
    Alert,
    Base,
    JSONType,
    Replication,
    Restore,
    RestorePointRow,
    Run,
    Task,
    UTCDateTime,
)


class EventRow(Base):
    __tablename__ = "event_log"
    __table_args__ = {"sqlite_autoincrement": True}  # an id is never used twice, even after a trim

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # run.state, task.state, restore.state, ...
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    restore_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)


def _changed(obj: object, *names: str) -> dict[str, Any] | None:
    """{name: previous value} of the named attributes that changed, or None when none did."""
    state = inspect(obj)
    previous: dict[str, Any] = {}
    for name in names:
        history = state.attrs[name].history
        if history.added and (not history.deleted or history.deleted[0] != history.added[0]):
            previous[name] = history.deleted[0] if history.deleted else None
    return previous or None


def _now() -> datetime:
    return datetime.now(UTC)


def _job_of(session: Session, run_id: str | None) -> str | None:
    if run_id is None:
        return None
    run = session.get(Run, run_id) or next(
        (o for o in session.new if isinstance(o, Run) and o.id == run_id), None
    )  # a run added in this flush is not in the identity map yet
    return run.job_id if run is not None else None


def _rows(session: Session) -> list[EventRow]:
    rows: list[EventRow] = []
    for obj in [*session.new, *session.dirty]:
        is_new = obj in session.new
        if isinstance(obj, Alert):
            if is_new:
                rows.append(alert_row(obj, _job_of(session, obj.run_id)))
            continue
        if not isinstance(obj, Run | Task | Restore | Replication):
            continue
        previous = {"state": None} if is_new else _changed(obj, *_TRACKED[type(obj)])
        if previous is None:
            continue
        if isinstance(obj, Run):
            rows.append(run_row(obj.id, obj.job_id, obj.state, previous.get("state"), obj.error))
        elif isinstance(obj, Task):
            rows.append(
                task_row(
                    obj.id, obj.run_id, _job_of(session, obj.run_id), obj.vm_name, obj.vcenter,
                    obj.state, obj.phase, obj.error,
                )
            )  # fmt: skip
        elif isinstance(obj, Restore):
            rows.append(
                EventRow(
                    at=_now(), kind="restore.state", run_id=obj.run_id, job_id=_job_of(session, obj.run_id),
                    restore_id=obj.id,
                    data={"state": obj.state, "phase": obj.phase, "mode": obj.mode,
                          "restore_point_id": obj.restore_point_id, "error": obj.error},
                )
            )  # fmt: skip
        else:
            point = session.get(RestorePointRow, obj.restore_point_id)
            rows.append(
                EventRow(
                    at=_now(), kind="replication.state", run_id=point.run_id if point else None,
                    job_id=point.job_id if point else None,
                    data={"replication_id": obj.id, "restore_point_id": obj.restore_point_id,
                          "target": obj.target, "state": obj.state, "bytes_sent": obj.bytes_sent,
                          "error": obj.error},
                )
            )  # fmt: skip
    return rows


_TRACKED: dict[type, tuple[str, ...]] = {
    Run: ("state",),
    Task: ("state", "phase"),
    Restore: ("state", "phase"),
    Replication: ("state",),
}


def run_row(run_id: str, job_id: str | None, state: str, previous: str | None, error: str | None) -> EventRow:
    return EventRow(
        at=_now(), kind="run.state", run_id=run_id, job_id=job_id,
        data={"state": state, "previous": previous, "error": error},
    )  # fmt: skip


def task_row(
    task_id: str, run_id: str, job_id: str | None, vm_name: str, vcenter: str, state: str, phase: str,
    error: str | None,
) -> EventRow:  # fmt: skip
    return EventRow(
        at=_now(), kind="task.state", run_id=run_id, job_id=job_id, task_id=task_id,
        data={"vm_name": vm_name, "vcenter": vcenter, "state": state, "phase": phase, "error": error},
    )  # fmt: skip


def alert_row(alert: Alert, job_id: str | None) -> EventRow:
    return EventRow(
        at=_now(), kind="alert.raised", run_id=alert.run_id, job_id=job_id,
        data={"alert_id": alert.id, "severity": alert.severity, "kind": alert.kind,
              "message": alert.message, "vm_name": alert.vm_name},
    )  # fmt: skip


def record_task(session: Session, task_id: str) -> None:
    """After a bulk update of a task's state or phase: its row, read back as it is now."""
    found = session.execute(
        select(Task.run_id, Run.job_id, Task.vm_name, Task.vcenter, Task.state, Task.phase, Task.error)
        .join(Run, Run.id == Task.run_id)
        .where(Task.id == task_id)
    ).first()
    if found is not None:
        run_id, job_id, vm_name, vcenter, state, phase, error = found
        session.add(task_row(task_id, run_id, job_id, vm_name, vcenter, state, phase, error))


def record_run(session: Session, run_id: str, job_id: str | None, state: str, previous: str) -> None:
    """After a bulk update of a run's state (the dispatcher's claim)."""
    session.add(run_row(run_id, job_id, state, previous, None))


@event.listens_for(Session, "before_flush")
def _capture(session: Session, _context: object, _instances: object) -> None:
    with session.no_autoflush:
        rows = _rows(session)
    session.add_all(rows)
