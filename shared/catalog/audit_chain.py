"""Proving the audit log is whole (`verify`) and letting old records go (`prune`).

`verify` walks the records in id order and recomputes every hash. It names the first place where
the log differs from what was written: a record whose contents no longer give its hash (changed),
a record whose hash is not the one its successor links to (changed, with its hash recomputed), a
gap in the ids (records removed), or a start that is neither the first record ever (id 1, linked
to GENESIS) nor the anchor the newest `audit.prune` record names (records removed from the start).

Pruning deletes a prefix of the chain: every record older than the retention, except that the
newest record always stays. In the same transaction it appends an `audit.prune` record whose
parameters name the first record kept and its `prev_hash`: that record is the anchor, trusted as
the chain's start from then on. Deleting by age alone could cut holes (writers' clocks differ by
milliseconds); the prefix is everything before the oldest record inside the retention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog.audit import fields_of, insert, retried
from shared.clock import iso
from shared.db.audit import AuditRecord
from shared.model.audit import GENESIS, params_text

PRUNE = "audit.prune"
PAGE = 1000


@dataclass(frozen=True)
class Verdict:
    """What `verify` found: `problem` is None when the chain is whole."""

    count: int
    first_id: int | None
    last_id: int | None
    last_hash: str | None
    anchored: bool  # the chain starts at a prune's anchor, not at record 1
    problem: str | None = None
    record_id: int | None = None  # the record changed, or the first one removed

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session: Session) -> Verdict:
    """Recompute the chain from its first record; the first record changed or removed, if any."""
    first = session.scalar(select(AuditRecord).order_by(AuditRecord.id).limit(1))
    if first is None:
        return Verdict(0, None, None, None, anchored=False)
    head = _head_problem(session, first)
    count, prev, after = 0, None, 0
    problem: tuple[str, int] | None = None
    while problem is None:
        page = select(AuditRecord).where(AuditRecord.id > after).order_by(AuditRecord.id).limit(PAGE)
        rows = list(session.scalars(page))
        if not rows:
            break
        for row in rows:
            problem = _link_problem(prev, row)
            if problem is not None:
                break
            count, prev = count + 1, row
        after = rows[-1].id
    if head is not None and (problem is None or problem[1] >= head[1]):
        problem = head
    last = prev
    return Verdict(
        count=count,
        first_id=first.id,
        last_id=last.id if last else None,
        last_hash=last.hash if last else None,
        anchored=first.prev_hash != GENESIS,
        problem=problem[0] if problem else None,
        record_id=problem[1] if problem else None,
    )


def _link_problem(prev: AuditRecord | None, row: AuditRecord) -> tuple[str, int] | None:
    if prev is not None and row.id != prev.id + 1:
        gone = f"record {prev.id + 1}" if row.id == prev.id + 2 else f"records {prev.id + 1}..{row.id - 1}"
        return f"{gone} removed (between records {prev.id} and {row.id})", prev.id + 1
    if fields_of(row).digest(row.prev_hash) != row.hash:
        return f"record {row.id} was changed: its contents do not give its hash", row.id
    if prev is not None and row.prev_hash != prev.hash:
        return (
            f"record {prev.id} was changed (its hash was recomputed): record {row.id} links to another hash",
            prev.id,
        )
    return None


def _head_problem(session: Session, first: AuditRecord) -> tuple[str, int] | None:
    """Whether the chain starts where it may: at record 1 (never pruned) or at the anchor the
    newest prune named."""
    if first.id == 1 and first.prev_hash == GENESIS:
        return None
    newest = session.scalar(
        select(AuditRecord).where(AuditRecord.action == PRUNE).order_by(AuditRecord.id.desc()).limit(1)
    )
    anchor = _anchor(newest)
    if anchor is None or newest is None:
        gone = "record 1" if first.id == 2 else f"records 1..{first.id - 1}"
        return f"{gone} removed from the start (no audit.prune record explains it)", 1
    anchor_id, anchor_prev = anchor
    if first.id > anchor_id:
        gone = f"record {anchor_id}" if first.id == anchor_id + 1 else f"records {anchor_id}..{first.id - 1}"
        why = f"the last prune, record {newest.id}, kept {anchor_id}"
        return f"{gone} removed from the start ({why})", anchor_id
    if first.id < anchor_id or first.prev_hash != anchor_prev:
        return f"record {first.id} is not the anchor the last prune (record {newest.id}) names", first.id
    return None


def _anchor(row: AuditRecord | None) -> tuple[int, str] | None:
    if row is None:
        return None
    try:
        params = json.loads(row.params)
        return int(params["anchor_id"]), str(params["anchor_prev_hash"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Pruned:
    deleted: int
    before: datetime
    anchor_id: int | None
    record_id: int  # the audit.prune record


def prune(
    sessions: sessionmaker[Session],
    retention_days: int,
    now: datetime,
    *,
    actor: str,
    source: str = "service",
) -> Pruned:
    """Delete the records older than `retention_days` (never the newest) and append the
    `audit.prune` record naming the new anchor, in one transaction (retried on a writer's race)."""
    before = now - timedelta(days=retention_days)
    return retried(lambda s: _prune(s, retention_days, before, now, actor, source), sessions, "audit prune")


EVERY = timedelta(hours=23)  # the daily prune, with room for a late start


def prune_if_due(
    sessions: sessionmaker[Session], retention_days: int, now: datetime, *, actor: str
) -> Pruned | None:
    """The daily prune: `prune` unless the newest `audit.prune` record is younger than a day
    (several schedulers, or restarts, prune once a day between them)."""
    with sessions() as s:
        last = s.scalar(select(func.max(AuditRecord.at)).where(AuditRecord.action == PRUNE))
    if last is not None and now - last < EVERY:
        return None
    return prune(sessions, retention_days, now, actor=actor)


def _prune(s: Session, days: int, before: datetime, now: datetime, actor: str, source: str) -> Pruned:
    newest = s.scalar(select(func.max(AuditRecord.id)))
    deleted = 0
    anchor: AuditRecord | None = None
    if newest is not None:
        keep = s.scalar(select(func.min(AuditRecord.id)).where(AuditRecord.at >= before))
        keep = newest if keep is None else keep
        result = s.execute(delete(AuditRecord).where(AuditRecord.id < keep))
        deleted = int(result.rowcount)  # type: ignore[attr-defined]
        anchor = s.scalar(select(AuditRecord).order_by(AuditRecord.id).limit(1))
    params: dict[str, Any] = {"retention_days": days, "before": iso(before), "deleted": deleted}
    if anchor is not None:
        params |= {"anchor_id": anchor.id, "anchor_prev_hash": anchor.prev_hash}
    text = {
        "actor": actor, "source": source, "action": PRUNE, "target": "audit_log",
        "params": params_text(params), "result": "ok", "request_id": "",
    }  # fmt: skip
    row = insert(s, now, text)
    return Pruned(deleted, before, anchor.id if anchor else None, row.id)
