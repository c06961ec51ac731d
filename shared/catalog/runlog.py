"""A run's log: what happened to it, in words, for the people who look at it (API, CLI, UI).

Lines are written by every service in the transaction of the change they describe, so the log
never says something the database does not hold. Waiting reasons are written when they change,
not every time they are looked at again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from shared.db.models import Run
from shared.db.work import RunLogLine

KEEP = timedelta(days=180)  # the log of a run older than this goes (the run's row stays)

Level = Literal["info", "warning", "error"]


def write(
    session: Session,
    run_id: str,
    message: str,
    now: datetime,
    *,
    task_id: str | None = None,
    level: Level = "info",
) -> None:
    session.add(RunLogLine(run_id=run_id, task_id=task_id, at=now, level=level, message=message[:4000]))


def lines(session: Session, run_id: str, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """The run's lines after id `after`, oldest first (a follower passes the last id it saw)."""
    rows = session.scalars(
        select(RunLogLine)
        .where(RunLogLine.run_id == run_id, RunLogLine.id > after)
        .order_by(RunLogLine.id)
        .limit(limit)
    )
    return [
        {"id": r.id, "at": r.at, "level": r.level, "task_id": r.task_id, "message": r.message} for r in rows
    ]


def trim(session: Session, now: datetime) -> int:
    """Delete the lines of runs that are gone and lines older than KEEP; how many went."""
    gone = session.execute(
        delete(RunLogLine).where((RunLogLine.at < now - KEEP) | RunLogLine.run_id.not_in(select(Run.id)))
    )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]
