"""Counting semaphores in the database: at most N holders of a resource across every process.

A holder of a resource with limit N takes a slot (a row: the resource and a slot number the
primary key keeps unique) only while fewer than N live rows exist, counted in the same
transaction (acquirers of one resource take turns: an advisory lock on PostgreSQL, the write
lock on SQLite), so a limit lowered meanwhile is respected at once by new holders. It renews
the row while it works and deletes it when done; a row whose holder died is free again once
`expires_at` passes. Used for disk streams per datastore, host and repository (docs/design.md,
"Scheduling of work").
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.work import Lease

TTL = timedelta(seconds=60)


def acquire(
    sessions: sessionmaker[Session], resource: str, limit: int, holder: str, now: datetime
) -> int | None:
    """A slot of `resource`, now held by `holder`, when fewer than `limit` are held (a limit
    lowered meanwhile counts too); None otherwise. A full resource costs one read, no write."""
    with sessions() as s:
        live = s.scalar(select(func.count()).where(Lease.resource == resource, Lease.expires_at >= now))
        if (live or 0) >= limit:
            return None
    try:
        with sessions.begin() as s:
            _serialize(s, resource)
            s.execute(delete(Lease).where(Lease.resource == resource, Lease.expires_at < now))
            taken = set(s.scalars(select(Lease.slot).where(Lease.resource == resource)))
            if len(taken) >= limit:
                return None
            slot = next(n for n in range(len(taken) + 1) if n not in taken)
            s.add(Lease(resource=resource, slot=slot, holder=holder, expires_at=now + TTL))
        return slot
    except IntegrityError:  # a holder took the same slot at this instant: ask again later
        return None


def _serialize(s: Session, resource: str) -> None:
    """Acquirers of one resource one at a time: PostgreSQL by an advisory lock held to the end of
    the transaction; SQLite by its write lock, which the DELETE that follows takes."""
    if s.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.blake2b(resource.encode(), digest_size=8).digest(), "big", signed=True)
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def renew(sessions: sessionmaker[Session], resource: str, slot: int, holder: str, now: datetime) -> bool:
    """Extend a held slot; False when it was lost (expired and taken by someone else)."""
    with sessions.begin() as s:
        done = s.execute(
            update(Lease)
            .where(Lease.resource == resource, Lease.slot == slot, Lease.holder == holder)
            .values(expires_at=now + TTL)
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]


def release(sessions: sessionmaker[Session], resource: str, slot: int, holder: str) -> None:
    with sessions.begin() as s:
        s.execute(delete(Lease).where(Lease.resource == resource, Lease.slot == slot, Lease.holder == holder))


def held(session: Session, now: datetime, prefix: str = "") -> dict[str, int]:
    """Live holders per resource (optionally those whose name starts with `prefix`)."""
    query = select(Lease.resource, func.count()).where(Lease.expires_at >= now).group_by(Lease.resource)
    if prefix:
        query = query.where(Lease.resource.startswith(prefix))
    return {str(r): int(n) for r, n in session.execute(query).all()}


def datastore(vcenter: str, name: str) -> str:
    return f"ds:{vcenter}/{name}"


def host(vcenter: str, name: str) -> str:
    return f"host:{vcenter}/{name}"


def repository(location: str) -> str:
    return f"repo:{location}"
