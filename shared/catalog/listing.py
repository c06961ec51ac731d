"""Lists that clients page through (docs/api.md, "Paging"): one window of rows by time, with
filters, in a stable order, by offset or by cursor.

Every list orders by its time column and then its id (ties broken, so the order is stable), newest
first unless `order=asc`. `since`/`until` bound the time (ISO 8601). A page is `limit` rows from
`offset`, or after `cursor`: the opaque `next_cursor` of the page before, a keyset position
(time, id), so that a client walking a list while rows are added sees no row twice and skips none
of those that were there. `total` counts the rows that match the filters and the time bounds.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.clock import aware, iso
from shared.errors import Invalid

MAX_LIMIT = 500
WINDOW_PARAMETERS = frozenset({"limit", "offset", "cursor", "since", "until", "order"})


@dataclass(frozen=True)
class Window:
    limit: int = 50
    offset: int = 0
    after: tuple[datetime, str] | None = None  # the cursor: the last (time, id) seen
    since: datetime | None = None
    until: datetime | None = None
    ascending: bool = False

    @classmethod
    def parse(
        cls,
        query: Mapping[str, str],
        filters: Collection[str] = (),
        default_limit: int = 50,
        max_limit: int = MAX_LIMIT,
    ) -> Window:
        """The window a query string asks for; Invalid names the parameter, including one that
        the list does not know (a misspelt filter must not silently list everything)."""
        unknown = sorted(set(query) - WINDOW_PARAMETERS - set(filters))
        if unknown:
            known = ", ".join(sorted(WINDOW_PARAMETERS | set(filters)))
            raise Invalid(unknown[0], f"unknown query parameter (known: {known})", where="query")
        window = cls(
            limit=_int(query, "limit", default_limit, 1, max_limit),
            offset=_int(query, "offset", 0, 0, 10**9),
            after=_cursor(query.get("cursor")),
            since=_time(query, "since"),
            until=_time(query, "until"),
            ascending=_order(query.get("order")),
        )
        if window.after is not None and window.offset:
            raise Invalid("offset", "give a cursor or an offset, not both", where="query")
        if window.since and window.until and window.until <= window.since:
            raise Invalid("until", "must be later than since", where="query")
        return window


@dataclass(frozen=True)
class Paged:
    total: int
    rows: list[Any]
    next_cursor: str | None

    def answer(self, name: str, views: list[Any], window: Window) -> dict[str, Any]:
        return {
            name: views,
            "total": self.total,
            "limit": window.limit,
            "offset": window.offset,
            "next_cursor": self.next_cursor,
        }


def page(
    session: Session,
    query: Select[Any],
    when: InstrumentedAttribute[Any],
    key: InstrumentedAttribute[Any],
    window: Window,
) -> Paged:
    """One page of `query` (filtered already) in `when`, `key` order within the window."""
    if window.since is not None:
        query = query.where(when >= window.since)
    if window.until is not None:
        query = query.where(when < window.until)
    total = int(session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0)
    if window.after is not None:
        at, last = window.after
        if window.ascending:
            query = query.where(or_(when > at, and_(when == at, key > last)))
        else:
            query = query.where(or_(when < at, and_(when == at, key < last)))
    order = (when.asc(), key.asc()) if window.ascending else (when.desc(), key.desc())
    rows = list(
        session.scalars(query.order_by(None).order_by(*order).limit(window.limit + 1).offset(window.offset))
    )
    more = len(rows) > window.limit
    rows = rows[: window.limit]
    cursor = None
    if more and rows:
        tail = rows[-1]
        cursor = _encode(getattr(tail, when.key), str(getattr(tail, key.key)))
    return Paged(total, rows, cursor)


def _encode(at: datetime, key: str) -> str:
    raw = json.dumps([iso(aware(at)), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(text: str | None) -> tuple[datetime, str] | None:
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at, key = json.loads(raw)
        return aware(datetime.fromisoformat(at)), str(key)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise Invalid(
            "cursor", "is not a cursor this list gave (use next_cursor as it came)", where="query"
        ) from None


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise Invalid(name, f"{text!r} is not a whole number from {low} to {high}", where="query")
    return int(text)


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    text = query.get(name)
    if not text:
        return None
    try:
        return aware(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise Invalid(
            name, f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)", where="query"
        ) from None


def _order(text: str | None) -> bool:
    if text in (None, "", "desc"):
        return False
    if text == "asc":
        return True
    raise Invalid("order", f"{text!r} is neither asc nor desc", where="query")
