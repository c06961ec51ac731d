"""Idempotency keys (docs/design.md, "Idempotency keys"): a `POST` that starts something, sent
again with the same key by the same caller on the same route, gets the first answer back and
starts nothing twice.

`once` runs the work and stores its answer in ONE transaction that begins by inserting the key's
row. So a row that can be read always holds an answer, and concurrent requests with one key are
served one after the other by the database itself: the first holds the key (PostgreSQL's unique
index, SQLite's write lock) until it commits, the others wait for it, then find its row and
answer its answer. Work that fails (a 4xx or 5xx) rolls back with the key: nothing was started,
nothing is remembered, and a retry runs it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import iso
from shared.db.idempotency import IdempotencyKey
from shared.errors import Invalid

HEADER = "Idempotency-Key"
TTL = timedelta(hours=24)
MAX_LENGTH = 255


@dataclass(frozen=True)
class Answer:
    """What a request answered: its status, JSON body and Location header."""

    status: int
    body: Any
    location: str | None = None
    replayed: bool = False  # the stored answer of an earlier request with the same key


@dataclass(frozen=True)
class Claim:
    """A key as one caller sent it on one route, with the hash of the body it came with."""

    caller: str
    route: str
    key: str
    body_sha256: str


def check_key(key: str) -> str:
    """The key as given: 1 to 255 printable ASCII characters (space to `~`), else Invalid
    naming the header."""
    if not key:
        raise Invalid(HEADER, "is empty: send 1 to 255 printable ASCII characters, or no header")
    if len(key) > MAX_LENGTH:
        raise Invalid(HEADER, f"is {len(key)} characters long: at most {MAX_LENGTH}")
    bad = next((c for c in key if not " " <= c <= "~"), None)
    if bad is not None:
        raise Invalid(HEADER, f"holds {bad!r}: only printable ASCII characters (space to '~')")
    return key


def body_hash(raw: bytes) -> str:
    """SHA-256 of a body: of its JSON in a canonical form (key order and spacing do not make
    two bodies differ), or of its bytes when it is not JSON. An empty body is its own value."""
    if raw.strip():
        with contextlib.suppress(ValueError):
            raw = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()


def once(
    sessions: sessionmaker[Session], claim: Claim, work: Callable[[Session], Answer], now: datetime
) -> Answer:
    """The answer of `work(session)`, run once for `claim` (blocking: call it in a thread).

    The key's row is inserted first, then the work runs and its answer is stored with it, all
    committed together. A key seen before (within 24 h) answers the stored answer, `replayed`;
    with another body it is Invalid. An expired key counts as new.
    """
    with sessions.begin() as session:
        if _insert(session, claim, now):
            row = session.get(IdempotencyKey, (claim.caller, claim.route, claim.key))
            assert row is not None
        else:
            stored = _stored(session, claim, now)
            if isinstance(stored, Answer):
                return stored
            row = stored  # expired, renewed for this request
        answer = work(session)
        row.status, row.body, row.location = answer.status, answer.body, answer.location
        return answer


def _insert(session: Session, claim: Claim, now: datetime) -> bool:
    """Insert the key's row, the transaction's first write; False when it exists (after
    waiting for a transaction that holds it). INSERT ... ON CONFLICT DO NOTHING on both
    engines (a savepoint would not do: pysqlite commits one opened before any write)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = {
        "caller": claim.caller,
        "route": claim.route,
        "key": claim.key,
        "body_sha256": claim.body_sha256,
        "status": 0,
        "body": {},
        "created_at": now,
    }
    statement = insert(IdempotencyKey).values(**values).on_conflict_do_nothing()
    # RETURNING, not rowcount: psycopg reports -1 for this statement
    return session.execute(statement.returning(IdempotencyKey.key)).first() is not None


def _stored(session: Session, claim: Claim, now: datetime) -> Answer | IdempotencyKey:
    """The stored answer for the key, or its row when it had expired and is now renewed for us."""
    pk = (claim.caller, claim.route, claim.key)
    renew = (
        update(IdempotencyKey)
        .where(IdempotencyKey.caller == claim.caller, IdempotencyKey.route == claim.route)
        .where(IdempotencyKey.key == claim.key, IdempotencyKey.created_at < now - TTL)
        .values(body_sha256=claim.body_sha256, created_at=now, status=0, body={}, location=None)
        .execution_options(synchronize_session=False)
    )
    renewed = cast("CursorResult[Any]", session.execute(renew)).rowcount == 1
    stored = session.get(IdempotencyKey, pk, populate_existing=True)
    if stored is None and _insert(session, claim, now):  # an expired row purged meanwhile
        stored = session.get(IdempotencyKey, pk)
        renewed = True
    if stored is None:
        raise Invalid(HEADER, "was being expired by another request at the same time: send it again")
    if renewed:
        return stored
    if stored.body_sha256 != claim.body_sha256:
        raise Invalid(
            HEADER,
            f"was used at {iso(stored.created_at)} with another body on {claim.route}:"
            " a key names one request (send a new key for a new request)",
        )
    return Answer(stored.status, stored.body, stored.location, replayed=True)


def purge(sessions: sessionmaker[Session], now: datetime) -> int:
    """Delete the keys older than 24 h (best effort, its own transaction); how many went."""
    try:
        with sessions.begin() as session:
            gone = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now - TTL))
            return int(cast("CursorResult[Any]", gone).rowcount or 0)
    except SQLAlchemyError:
        return 0
