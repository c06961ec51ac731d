"""The audit log (docs/design.md, "Audit log"): append, query, verify, prune.

Every record is written in a transaction of its own by whichever process acts (gateway,
scheduler, verifier, snapshotter, notifier, the vbm command). Appending reads the end of the
chain (the newest record) and inserts id + 1 with `prev_hash` = that record's hash; both the id
and `prev_hash` are unique, so of two writers that read the same end one commits and the other
fails its INSERT, rolls back and retries on the new end. The chain never forks, on SQLite and
PostgreSQL alike, and ids stay contiguous (a gap is a removed record).

`verify` and `prune` live in shared/catalog/audit_chain.py.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import iso, utcnow
from shared.db.audit import AuditRecord
from shared.model.audit import GENESIS, Fields, params_text

log = logging.getLogger(__name__)

ATTEMPTS = 100  # a writer that loses this many races in a row gives up (and says so)
BUSY_ATTEMPTS = 3
T = TypeVar("T")


class AuditWriteFailed(Exception):
    """The record could not be written; the message says why."""


def append(
    sessions: sessionmaker[Session],
    *,
    actor: str,
    action: str,
    target: str = "",
    params: Any = None,
    result: str = "ok",
    source: str = "service",
    request_id: str = "",
    at: datetime | None = None,
) -> AuditRecord:
    """Write one record in a transaction of its own (retried when another writer took the end)."""
    text = {
        "actor": actor or "-", "source": source, "action": action, "target": target,
        "params": params_text(params), "result": result or "ok", "request_id": request_id,
    }  # fmt: skip
    return retried(lambda s: insert(s, at or utcnow(), text), sessions, f"audit record {action!r}")


def retried(work: Callable[[Session], T], sessions: sessionmaker[Session], what: str) -> T:
    """`work` in a transaction of its own, again while another writer took the end of the chain
    first (a unique violation: up to ATTEMPTS times) or the database was busy (a lock or
    serialization error: up to BUSY_ATTEMPTS times, SQLite having waited its busy timeout)."""
    lost = busy = 0
    while True:
        try:
            with sessions.begin() as s:
                return work(s)
        except IntegrityError as exc:
            lost += 1
            if lost >= ATTEMPTS:
                raise AuditWriteFailed(f"{what} not written: lost the race {lost} times: {exc}") from exc
        except OperationalError as exc:
            busy += 1
            if busy >= BUSY_ATTEMPTS:
                raise AuditWriteFailed(f"{what} not written: the database is busy: {exc}") from exc
        time.sleep(random.uniform(0, min(0.05, 0.002 * (lost + busy))))


def try_append(sessions: sessionmaker[Session], **record: Any) -> bool:
    """`append`, for what the system does on its own: a failure is logged as an error, never
    raised (the work was done; the log says the audit record is missing)."""
    try:
        append(sessions, **record)
    except Exception as exc:
        log.error("AUDIT RECORD NOT WRITTEN: %s on %s: %s", record.get("action"), record.get("target"), exc)
        return False
    return True


def insert(session: Session, at: datetime, text: dict[str, str]) -> AuditRecord:
    """Insert a record at the end of the chain in `session` (flushed, not committed)."""
    end = session.execute(
        select(AuditRecord.id, AuditRecord.hash).order_by(AuditRecord.id.desc()).limit(1)
    ).first()
    new_id, prev = (1, GENESIS) if end is None else (end.id + 1, end.hash)
    fields = Fields.of(new_id, at, **text)
    row = AuditRecord(
        id=fields.id,
        at=fields.at,
        actor=fields.actor,
        source=fields.source,
        action=fields.action,
        target=fields.target,
        params=fields.params,
        result=fields.result,
        request_id=fields.request_id,
        prev_hash=prev,
        hash=fields.digest(prev),
    )
    session.add(row)
    session.flush()
    return row


def fields_of(row: AuditRecord) -> Fields:
    return Fields(
        id=row.id, at=row.at, actor=row.actor, source=row.source, action=row.action, target=row.target,
        params=row.params, result=row.result, request_id=row.request_id,
    )  # fmt: skip


@dataclass(frozen=True)
class Filters:
    """What `query` selects; None is no condition."""

    user: str | None = None  # the actor: `alice` also matches `alice (key ...)`
    action: str | None = None  # substring, case-insensitive
    target: str | None = None  # exact, or a prefix when it ends with `*` (`job:*`)
    vm: str | None = None  # substring of the target or the parameters
    result: str | None = None  # "ok" or "error"
    since: datetime | None = None
    until: datetime | None = None


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def selection(f: Filters) -> Select[Any]:
    q = select(AuditRecord)
    if f.user:
        keyed = AuditRecord.actor.like(f"{_like(f.user)} (%", escape="\\")
        q = q.where(or_(AuditRecord.actor == f.user, keyed))
    if f.action:
        q = q.where(func.lower(AuditRecord.action).like(f"%{_like(f.action.lower())}%", escape="\\"))
    if f.target:
        if f.target.endswith("*"):
            q = q.where(AuditRecord.target.like(f"{_like(f.target[:-1])}%", escape="\\"))
        else:
            q = q.where(AuditRecord.target == f.target)
    if f.vm:
        pattern = f"%{_like(f.vm.lower())}%"
        q = q.where(
            or_(
                func.lower(AuditRecord.target).like(pattern, escape="\\"),
                func.lower(AuditRecord.params).like(pattern, escape="\\"),
            )
        )
    if f.result == "ok":
        q = q.where(AuditRecord.result == "ok")
    elif f.result == "error":
        q = q.where(AuditRecord.result != "ok")
    if f.since is not None:
        q = q.where(AuditRecord.at >= f.since)
    if f.until is not None:
        q = q.where(AuditRecord.at < f.until)
    return q


def query(
    session: Session, f: Filters, *, limit: int = 100, cursor: int | None = None, offset: int = 0
) -> list[AuditRecord]:
    """Newest first: at most `limit` records, older than record `cursor` (or after `offset`)."""
    q = selection(f)
    if cursor is not None:
        q = q.where(AuditRecord.id < cursor)
    q = q.order_by(AuditRecord.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(q))


def page(
    session: Session, f: Filters, *, limit: int, cursor: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """A page of records as GET /api/v1/audit and `vbm audit ls --json` answer it."""
    rows = query(session, f, limit=limit, cursor=cursor, offset=offset)
    more = len(rows) == limit
    return {
        "records": [view(r) for r in rows],
        "total": count(session, f),
        "next_cursor": rows[-1].id if rows and more else None,
    }


def count(session: Session, f: Filters) -> int:
    return int(session.scalar(select(func.count()).select_from(selection(f).subquery())) or 0)


def iterate(
    sessions: sessionmaker[Session], f: Filters, *, limit: int | None = None
) -> Iterator[AuditRecord]:
    """Every selected record, newest first, read a page at a time (for exports)."""
    cursor: int | None = None
    left = limit
    while left is None or left > 0:
        page = 500 if left is None else min(500, left)
        with sessions() as s:
            rows = query(s, f, limit=page, cursor=cursor)
        yield from rows
        if len(rows) < page:
            return
        cursor = rows[-1].id
        left = None if left is None else left - len(rows)


COLUMNS = ("id", "at", "actor", "source", "action", "target", "params", "result", "request_id", "hash")


def view(row: AuditRecord) -> dict[str, Any]:
    """A record as the API and the CLI show it (`params` parsed; the stored text is what is hashed)."""
    try:
        params = json.loads(row.params)
    except ValueError:
        params = row.params  # changed behind vbm's back: shown as it is (verify names it)
    return {
        "id": row.id, "at": iso(row.at), "actor": row.actor, "source": row.source, "action": row.action,
        "target": row.target, "params": params, "result": row.result, "request_id": row.request_id,
        "prev_hash": row.prev_hash, "hash": row.hash,
    }  # fmt: skip


def export_line(row: AuditRecord, form: str) -> str:
    """One record of an export: a JSON line (`jsonl`) or a CSV row (`csv`, COLUMNS, the params
    as the stored text that is hashed)."""
    record = view(row)
    if form == "jsonl":
        return json.dumps(record, ensure_ascii=False) + "\n"
    record["params"] = row.params
    return csv_line([record[c] for c in COLUMNS])


def csv_line(values: Iterable[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([_cell(v) for v in values])
    return out.getvalue()


def _cell(value: Any) -> Any:
    """No cell a spreadsheet runs as a formula: text starting =, +, @, a tab or a CR, or - with
    more after it, gets a leading apostrophe (a record's target or action comes from callers)."""
    if value is None:
        return ""
    if isinstance(value, str) and value and (value[0] in "=+@\t\r" or (value[0] == "-" and len(value) > 1)):
        return "'" + value
    return value
