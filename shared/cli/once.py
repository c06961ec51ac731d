"""`--idempotency-key KEY` on the commands that start something (`vbm job run`, `vbm restore
start`): kept as the REST API keeps its `Idempotency-Key` (shared/catalog/idempotency.py), for
the caller `os:<user>` on the route the command names, so a retry of a command that may or may
not have got through prints what the first one started and starts nothing twice."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import idempotency
from shared.cli import audit as cli_audit
from shared.clock import utcnow


def once(
    sessions: sessionmaker[Session],
    key: str | None,
    route: str,
    body: bytes,
    work: Callable[[Session], idempotency.Answer],
) -> idempotency.Answer:
    """`work` in one transaction; with a key, at most once for it (a retry answers the stored
    answer, `replayed`; the same key with another body is Invalid)."""
    if key is None:
        with sessions.begin() as s:
            return work(s)
    claim = idempotency.Claim(
        caller=cli_audit.actor(),
        route=route,
        key=idempotency.check_key(key),
        body_sha256=idempotency.body_hash(body),
    )
    return idempotency.once(sessions, claim, work, utcnow())
