"""Reading the event log and the live progress of running tasks and restores, for
`GET /api/v1/events` (one poller per gateway process) and `vbm events` (docs/design.md, "Live
events"). The rows are written by the listener in shared/db/eventlog.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from shared.clock import iso
from shared.db.eventlog import EventRow
from shared.db.models import Restore, Run, Task
from shared.model.live import eta_seconds, family, public_phase

KEEP = timedelta(days=1)  # how far back a client can resume; older rows are trimmed hourly


def view(row: EventRow) -> dict[str, Any]:
    """The event as clients get it: id, type, at, the ids it is about, then its own fields."""
    data = dict(row.data or {})
    out: dict[str, Any] = {"id": row.id, "type": row.kind, "at": iso(row.at)}
    for name in ("run_id", "job_id", "task_id", "restore_id"):
        out[name] = getattr(row, name)
    if "phase" in data:
        data["vbm_phase"] = data["phase"]
        data["phase"] = public_phase(family(row.kind), data["phase"])
    if row.kind == "replication.state":
        data["phase"] = "done" if data.get("state") in ("done", "succeeded", "failed") else "replicating"
    return {**out, **data}


def bounds(session: Session) -> tuple[int, int]:
    """(oldest id kept, newest id), (0, 0) when the log is empty."""
    low, high = session.execute(select(func.min(EventRow.id), func.max(EventRow.id))).one()
    return int(low or 0), int(high or 0)


def after(session: Session, after_id: int, *, upto: int | None = None, limit: int = 500) -> list[EventRow]:
    """Rows with ids above `after_id` (and at most `upto`), oldest first."""
    query = select(EventRow).where(EventRow.id > after_id)
    if upto is not None:
        query = query.where(EventRow.id <= upto)
    rows = list(session.scalars(query.order_by(EventRow.id).limit(limit)))
    for row in rows:
        session.expunge(row)
    return rows


def progress(session: Session) -> list[dict[str, Any]]:
    """The latest progress of every running backup task and restore (the mover writes it every
    second), keyed by `key` (the task or restore id); no id: a sample, not a state change."""
    out: list[dict[str, Any]] = []
    tasks = session.execute(
        select(Task, Run.job_id).join(Run, Run.id == Task.run_id).where(Task.state == "running")
    ).all()
    for task, job_id in tasks:
        out.append(
            _sample(task.id, "task", task.phase, task.bytes_done, task.bytes_total, task.rate)
            | {"run_id": task.run_id, "job_id": job_id, "task_id": task.id, "restore_id": None,
               "vm_name": task.vm_name, "vcenter": task.vcenter, "note": task.wait_reason, "disks": []}
        )  # fmt: skip
    for r in session.scalars(select(Restore).where(Restore.state == "running")):
        restore = r
        out.append(
            _sample(r.id, "restore", r.phase, r.bytes_done, r.bytes_total, r.rate)
            | {"run_id": restore.run_id, "job_id": None, "task_id": None, "restore_id": restore.id,
               "vm_name": (restore.target or {}).get("name")}
        )  # fmt: skip
    return out


def _sample(key: str, kind: str, phase: str, done: int, total: int, rate: float) -> dict[str, Any]:
    return {
        "type": "progress",
        "key": key,
        "phase": public_phase(kind, phase),
        "vbm_phase": phase,
        "bytes_done": int(done or 0),
        "bytes_total": int(total or 0),
        "rate": round(float(rate or 0.0), 1),
        "eta_s": eta_seconds(int(done or 0), int(total or 0), float(rate or 0.0)),
    }


def trim(session: Session, now: datetime, keep: timedelta = KEEP) -> int:
    """Delete rows older than `keep`; how many went."""
    gone = session.execute(delete(EventRow).where(EventRow.at < now - keep))
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]
