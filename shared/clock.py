"""The one clock every part of vbm reads (tests inject their own): light to import."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(when: datetime | None) -> str | None:
    """RFC 3339 in UTC; SQLite hands back naive datetimes, which were written in UTC."""
    if when is None:
        return None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.isoformat().replace("+00:00", "Z")


def aware(when: datetime) -> datetime:
    """SQLite hands back naive datetimes, which were written in UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)
