"""The delivery log: one `Notification` row per message and channel (the notifier keeps it),
read by the API and the CLI, trimmed after `KEEP_LOG`."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import Notification


def notification_id(event: str, channel: str) -> str:
    return "ntf-" + hashlib.sha256(f"{event}|{channel}".encode()).hexdigest()[:32]


KEEP_LOG = timedelta(days=90)


def trim_log(session: Session, now: datetime) -> int:
    """Forget deliveries older than `KEEP_LOG` (the log is for recent trouble); how many."""
    rows = session.scalars(select(Notification).where(Notification.created_at < now - KEEP_LOG)).all()
    for row in rows:
        session.delete(row)
    return len(rows)


def failing_channels(session: Session) -> set[str]:
    """Channels whose newest delivery failed."""
    newest: dict[str, str] = {}
    for row in session.scalars(select(Notification).order_by(Notification.created_at, Notification.id)):
        newest[row.channel] = row.state
    return {name for name, state in newest.items() if state == "failed"}


def delivery_view(row: Notification) -> dict[str, Any]:
    return {
        "id": row.id,
        "event": row.event,
        "channel": row.channel,
        "outcome": row.outcome,
        "title": row.title,
        "state": row.state,
        "attempts": row.attempts,
        "error": row.error,
        "created_at": row.created_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
    }


def deliveries(session: Session, limit: int = 50) -> list[Notification]:
    query = select(Notification).order_by(Notification.created_at.desc(), Notification.id).limit(limit)
    return list(session.scalars(query))
