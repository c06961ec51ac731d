"""Counting semaphores in the database: at most N holders of a resource across every process.

A resource with limit N has slots 0..N-1; a holder takes a slot by inserting its row (the
primary key refuses a taken slot), renews it while it works, and deletes it when done. A slot
whose holder died is free again once `expires_at` passes. Used for disk streams per datastore,
host and repository (docs/design.md, "Scheduling of work").
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.work import Lease

TTL = timedelta(seconds=60)


def acquire(
    sessions: sessionmaker[Session], resource: str, limit: int, holder: str, now: datetime
) -> int | None:
    """A free slot of `resource` (limit > 0), now held by `holder`; None when all are taken."""
    with sessions.begin() as s:
        s.execute(delete(Lease).where(Lease.resource == resource, Lease.expires_at < now))
        taken = set(s.scalars(select(Lease.slot).where(Lease.resource == resource)))
    for slot in range(limit):
        if slot in taken:
            continue
        try:
            with sessions.begin() as s:
                s.add(Lease(resource=resource, slot=slot, holder=holder, expires_at=now + TTL))
            return slot
        except IntegrityError:  # another holder took it meanwhile: try the next
            continue
    return None


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
