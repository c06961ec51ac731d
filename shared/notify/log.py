"""The delivery log: one `Notification` row per message and channel (the notifier keeps it),
read by the API and the CLI, trimmed after `KEEP_LOG`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog import listing
from shared.catalog.listing import Window
from shared.db.models import Notification
from shared.errors import Invalid


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


STATES = ("pending", "sent", "failed")
FILTERS = ("channel", "state", "outcome", "alert")


def deliveries(session: Session, window: Window, filters: Mapping[str, str]) -> dict[str, Any]:
    """A page of the log as the API and `vbm notify log --json` answer it (without the channels):
    by `channel`, `state` (pending, sent, failed), `outcome` (success, warning, failure...) and
    `alert` (the deliveries of one alert's message), in the window's time order."""
    query = select(Notification)
    state = filters.get("state") or None
    if state is not None and state not in STATES:
        raise Invalid("state", f"{state!r} is not one of {', '.join(STATES)}", where="query")
    if state is not None:
        query = query.where(Notification.state == state)
    for name in ("channel", "outcome"):
        if filters.get(name):
            query = query.where(getattr(Notification, name) == filters[name])
    if filters.get("alert"):
        query = query.where(Notification.event == f"alert.raised:{filters['alert']}")
    found = listing.page(session, query, Notification.created_at, Notification.id, window)
    return found.answer("deliveries", [delivery_view(r) for r in found.rows], window)
