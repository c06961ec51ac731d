"""Replication (3-2-1): requesting, retrying and showing copies of restore points to secondary
repositories. The copying itself is the mover's (`services/mover/replicate.py`).

A job's `options.replicate_to` names the secondary repositories. When one of its restore points
verifies, the verifier calls `request` for each target in the same transaction: a `replications`
row (state `pending`) and a staged `ReplicateRequested`. A failed attempt goes back to `pending`
with `next_try_at` (1, 5, 15, 60 minutes later) and an alert naming the restore point and the
target; after `MAX_ATTEMPTS` it ends `failed`. The notifier's watchdog re-sends what is due
(`due`) and takes back attempts whose mover went quiet. Every function takes an open session and
leaves committing to the caller.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog.listing import Paged, Window, page
from shared.clock import aware, iso
from shared.contracts import ReplicateRequested
from shared.db.models import Replication
from shared.errors import Invalid
from shared.runtime.outbox import stage

MAX_ATTEMPTS = 5
BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1))
FINAL = ("done", "failed")


def replication_id(rp_id: str, target: str) -> str:
    digest = hashlib.sha256((rp_id + "\n" + target).encode()).hexdigest()
    return f"rep-{digest[:24]}"


def request(session: Session, rp_id: str, target: str, now: datetime) -> Replication:
    """A pending replication of `rp_id` to `target` (one per pair: asking again is a no-op)."""
    rep = session.get(Replication, replication_id(rp_id, target))
    if rep is not None:
        return rep
    rep = Replication(
        id=replication_id(rp_id, target), restore_point_id=rp_id, target=target, state="pending",
        attempts=0, chunks_sent=0, bytes_sent=0, created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(rep)
    session.flush()
    stage(session, ReplicateRequested(occurred_at=now, replication_id=rep.id, restore_point_id=rp_id), now)
    return rep


def retry_at(attempts: int, now: datetime) -> datetime:
    return now + BACKOFF[min(attempts, len(BACKOFF)) - 1]


def due(session: Session, now: datetime, stalled: timedelta) -> int:
    """Re-send replications whose retry time came, and take back running ones whose mover went
    quiet for `stalled` (it died, or the bus gave up on it). Returns how many were sent."""
    sent = 0
    rows = session.scalars(select(Replication).where(Replication.state.in_(("pending", "running"))))
    for rep in rows.all():
        ready = rep.state == "pending" and rep.next_try_at is not None and aware(rep.next_try_at) <= now
        quiet = rep.state == "running" and aware(rep.updated_at) < now - stalled
        if not (ready or quiet):
            continue
        if quiet and rep.attempts >= MAX_ATTEMPTS:  # its last attempt died: give up, say so
            from shared.catalog.alerts import raise_alert

            rep.state, rep.finished_at, rep.updated_at = "failed", now, now
            rep.error = f"attempt {rep.attempts} of {MAX_ATTEMPTS} stopped answering (its mover died or hung)"
            raise_alert(
                session,
                key=f"replication:{rep.id}:{rep.attempts}:quiet",
                kind="replication_failed",
                severity="error",
                now=now,
                message=f"restore point {rep.restore_point_id} could not be copied to {rep.target}:"
                f" {rep.error}; gave up. The backup itself is fine.",
            )
            continue
        rep.state, rep.next_try_at, rep.updated_at = "pending", None, now
        event = ReplicateRequested(
            occurred_at=now,
            replication_id=rep.id,
            restore_point_id=rep.restore_point_id,
            attempt=rep.attempts + 1,
        )
        stage(session, event, now)
        sent += 1
    return sent


STATES = ("pending", "running", "done", "failed")


def listing(
    session: Session, window: Window, *, state: str | None = None, restore_point: str | None = None
) -> Paged:
    """Copies by creation time (newest first unless the window says asc), of one state and/or
    one restore point, in a window (shared/catalog/listing.py); the API's
    `GET /api/v1/replications` and `vbm backups copies`. Invalid for an unknown state."""
    if state is not None and state not in STATES:
        raise Invalid("state", f"{state!r} is not pending, running, done or failed", where="query")
    query = select(Replication)
    if state:
        query = query.where(Replication.state == state)
    if restore_point:
        query = query.where(Replication.restore_point_id == restore_point)
    return page(session, query, Replication.created_at, Replication.id, window)


def view(rep: Replication) -> dict[str, Any]:
    return {
        "id": rep.id,
        "restore_point_id": rep.restore_point_id,
        "target": rep.target,
        "state": rep.state,
        "attempts": rep.attempts,
        "chunks_sent": rep.chunks_sent,
        "bytes_sent": rep.bytes_sent,
        "error": rep.error,
        "created_at": iso(rep.created_at),
        "updated_at": iso(rep.updated_at),
        "finished_at": iso(rep.finished_at),
        "next_try_at": iso(rep.next_try_at),
    }
