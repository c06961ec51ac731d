"""The audit log on SQLite and PostgreSQL: the chain, tampering named, concurrent writers, pruning."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import audit
from shared.catalog.audit_chain import PRUNE, Verdict, prune, prune_if_due, verify
from shared.db.audit import AuditRecord
from shared.model.audit import GENESIS, MASK, params_text

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def _write(sessions: sessionmaker[Session], n: int, start: datetime = T0) -> None:
    for i in range(n):
        audit.append(
            sessions,
            actor="alice" if i % 2 else "bob (key 0123456789abcdef)",
            source="127.0.0.1",
            action="POST /api/v1/jobs/{job_id}/run" if i % 3 else "DELETE /api/v1/jobs/{job_id}",
            target=f"job:j{i}",
            params={"n": i, "vm": f"vc1/vm-{i}"},
            result="ok" if i % 4 else "404 Not Found",
            request_id=f"req-{i}",
            at=start + timedelta(minutes=i),
        )


def _verdict(sessions: sessionmaker[Session]) -> Verdict:
    with sessions() as s:
        return verify(s)


def test_a_chain_verifies_and_links_each_record_to_the_one_before(sessions: sessionmaker[Session]) -> None:
    assert _verdict(sessions).ok and _verdict(sessions).count == 0
    _write(sessions, 10)
    v = _verdict(sessions)
    assert v.ok and v.count == 10 and (v.first_id, v.last_id) == (1, 10) and not v.anchored
    with sessions() as s:
        rows = list(s.scalars(select(AuditRecord).order_by(AuditRecord.id)))
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    assert v.last_hash == rows[-1].hash
    assert json.loads(rows[3].params) == {"n": 3, "vm": "vc1/vm-3"}


def test_an_edited_record_is_named(sessions: sessionmaker[Session]) -> None:
    _write(sessions, 10)
    with sessions.begin() as s:
        s.execute(update(AuditRecord).where(AuditRecord.id == 6).values(params='{"n":666}'))
    v = _verdict(sessions)
    assert not v.ok and v.record_id == 6 and "record 6 was changed" in (v.problem or "")


def test_an_edit_with_its_hash_recomputed_is_named_by_the_next_link(sessions: sessionmaker[Session]) -> None:
    _write(sessions, 10)
    with sessions.begin() as s:
        row = s.get(AuditRecord, 4)
        assert row is not None
        row.actor = "mallory"
        row.hash = audit.fields_of(row).digest(row.prev_hash)
    v = _verdict(sessions)
    assert not v.ok and v.record_id == 4 and "record 4 was changed" in (v.problem or "")


def test_a_deleted_record_is_named(sessions: sessionmaker[Session]) -> None:
    _write(sessions, 10)
    with sessions.begin() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.id == 7))
    v = _verdict(sessions)
    assert not v.ok and v.record_id == 7 and "record 7 removed" in (v.problem or "")
    with sessions.begin() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.id.in_((1, 2))))
    v = _verdict(sessions)
    assert v.record_id == 1 and "records 1..2 removed from the start" in (v.problem or "")


def test_concurrent_writers_never_fork_the_chain(sessions: sessionmaker[Session]) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                audit.append(sessions, actor=f"system:t{n}", action="test", target=f"t:{n}:{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    v = _verdict(sessions)
    assert v.ok and v.count == 400
    with sessions() as s:
        ids = list(s.scalars(select(AuditRecord.id).order_by(AuditRecord.id)))
        targets = set(s.scalars(select(AuditRecord.target)))
    assert ids == list(range(1, 401)) and len(targets) == 400


def test_prune_keeps_the_chain_verifiable_and_is_recorded(sessions: sessionmaker[Session]) -> None:
    _write(sessions, 10)  # 09:00 .. 09:09
    now = T0 + timedelta(days=30, minutes=5)  # records older than 09:05 go
    done = prune(sessions, 30, now, actor="system:scheduler")
    assert done.deleted == 5 and done.anchor_id == 6 and done.record_id == 11
    v = _verdict(sessions)
    assert v.ok and v.count == 6 and v.first_id == 6 and v.anchored
    with sessions() as s:
        rec = s.get(AuditRecord, 11)
    assert rec is not None and rec.action == PRUNE and rec.actor == "system:scheduler"
    assert json.loads(rec.params)["deleted"] == 5 and json.loads(rec.params)["anchor_id"] == 6
    # removing more from the start than the prune did is named
    with sessions.begin() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.id == 6))
    v = _verdict(sessions)
    assert not v.ok and v.record_id == 6 and "record 6 removed from the start" in (v.problem or "")


def test_prune_never_empties_the_log_and_a_second_prune_moves_the_anchor(
    sessions: sessionmaker[Session],
) -> None:
    _write(sessions, 3)
    far = T0 + timedelta(days=1000)
    first = prune(sessions, 400, far, actor="alice", source="cli")
    assert first.deleted == 2 and first.anchor_id == 3  # the newest record stays
    second = prune(sessions, 400, far + timedelta(days=500), actor="alice", source="cli")
    assert second.deleted == 1 and second.anchor_id == 4  # the first prune's record is the anchor now
    v = _verdict(sessions)
    assert v.ok and v.count == 2 and v.first_id == 4


def test_secrets_are_masked_and_filters_select(sessions: sessionmaker[Session]) -> None:
    body = {
        "name": "j",
        "password": "canary-xyz",
        "nested": [{"account_key": "canary-xyz", "webhook_url": "https://h/canary-xyz"}],
        "note": "vbm_0123456789abcdef_canarycanarycanarycanary",
    }
    text = params_text(body)
    assert "canary" not in text and json.loads(text)["password"] == MASK
    _write(sessions, 12)
    with sessions() as s:

        def ids(**f: object) -> list[int]:
            return [r.id for r in audit.query(s, audit.Filters(**f), limit=100)]  # type: ignore[arg-type]

        assert ids(user="bob") == [11, 9, 7, 5, 3, 1]
        assert ids(user="alice") == [12, 10, 8, 6, 4, 2]
        assert ids(user="ali") == []
        assert ids(action="delete") == [10, 7, 4, 1]
        assert ids(target="job:j3") == [4] and len(ids(target="job:*")) == 12
        assert ids(vm="VM-11") == [12]
        assert ids(result="error") == [9, 5, 1]
        assert ids(since=T0 + timedelta(minutes=10)) == [12, 11]
        assert ids(until=T0 + timedelta(minutes=2)) == [2, 1]
        assert [r.id for r in audit.query(s, audit.Filters(), limit=3, cursor=5)] == [4, 3, 2]
        assert [r.id for r in audit.query(s, audit.Filters(), limit=2, offset=2)] == [10, 9]
        assert audit.count(s, audit.Filters(result="ok")) == 9
    assert [r.id for r in audit.iterate(sessions, audit.Filters(), limit=5)] == [12, 11, 10, 9, 8]


def test_the_daily_prune_runs_once_a_day(sessions: sessionmaker[Session]) -> None:
    _write(sessions, 3)
    now = T0 + timedelta(days=500)
    first = prune_if_due(sessions, 400, now, actor="system:scheduler")
    assert first is not None and first.deleted == 2
    assert prune_if_due(sessions, 400, now + timedelta(hours=12), actor="system:scheduler") is None
    again = prune_if_due(sessions, 400, now + timedelta(hours=24), actor="system:scheduler")
    assert again is not None and again.deleted == 1 and again.anchor_id == 4  # the old record 3 went
    assert _verdict(sessions).ok


def _vbm(db_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env |= {"VBM_DATA_DIR": str(tmp_path), "VBM_DATABASE_URL": db_url, "VBM_AUDIT__RETENTION_DAYS": "30"}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "audit", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_vbm_audit_lists_exports_verifies_and_prunes(
    sessions: sessionmaker[Session], db_url: str, tmp_path: Path
) -> None:
    _write(sessions, 6)  # in January 2026: older than 30 days
    audit.append(sessions, actor="alice", action="DELETE /api/v1/jobs/{job_id}", target="job:new")
    listed = _vbm(db_url, tmp_path, "--user", "alice", "--action", "delete")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["7", "4"]
    as_json = json.loads(_vbm(db_url, tmp_path, "--result", "error", "--json", "--limit", "1").stdout)
    assert [r["id"] for r in as_json["records"]] == [5] and as_json["records"][0]["result"] == "404 Not Found"
    assert (as_json["total"], as_json["next_cursor"]) == (2, 5)  # as GET /api/v1/audit answers
    exported = _vbm(db_url, tmp_path, "--format", "csv", "--until", "2026-01-01T09:02:00Z").stdout
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0] == list(audit.COLUMNS) and [r[0] for r in rows[1:]] == ["2", "1"]
    jsonl = _vbm(db_url, tmp_path, "--result", "error", "ls", "--format", "jsonl", "--vm", "vm-").stdout
    assert [json.loads(line)["id"] for line in jsonl.splitlines()] == [5, 1]  # both filters hold
    bad = _vbm(db_url, tmp_path, "--since", "last week")
    assert bad.returncode == 2 and "--since: 'last week' is not an ISO 8601 time" in bad.stderr

    ok = _vbm(db_url, tmp_path, "verify")
    assert ok.returncode == 0 and "intact: 7 records from record 1 to 7" in ok.stdout
    assert json.loads(_vbm(db_url, tmp_path, "verify", "--json").stdout)["ok"] is True
    pruned = _vbm(db_url, tmp_path, "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "6 audit record(s) older than 30 days removed; record 7 is the chain's anchor" in pruned.stdout
    with sessions() as s:
        rec = s.scalar(select(AuditRecord).where(AuditRecord.action == PRUNE))
    assert rec is not None and rec.actor.startswith("os:") and rec.source == "cli"
    ok = _vbm(db_url, tmp_path, "verify")
    assert ok.returncode == 0 and "intact: 2 records from record 7 (the anchor" in ok.stdout

    with sessions.begin() as s:
        s.execute(update(AuditRecord).where(AuditRecord.id == 8).values(result="error"))
    broken = _vbm(db_url, tmp_path, "verify")
    assert broken.returncode == 1 and "BROKEN at record 8: record 8 was changed" in broken.stderr


def _append_in_child(url: str, n: int) -> int:
    from shared.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    for i in range(50):
        audit.append(sessions, actor=f"system:p{n}", action="test", target=f"p:{n}:{i}")
    engine.dispose()
    return n


def test_concurrent_processes_never_fork_the_chain(sessions: sessionmaker[Session], db_url: str) -> None:
    with ProcessPoolExecutor(4) as pool:
        assert sorted(pool.map(_append_in_child, [db_url] * 4, range(4))) == [0, 1, 2, 3]
    v = _verdict(sessions)
    assert v.ok and v.count == 200 and v.last_id == 200


def test_a_postgresql_role_with_insert_and_select_only_appends_and_verifies(postgres_url: str) -> None:
    """The grants docs/design.md gives for the services' role: enough to write and read the log,
    not to change or delete it (pruning needs a role that may DELETE)."""
    import psycopg
    from psycopg import sql

    from shared.db import make_engine, make_sessionmaker, upgrade
    from tests.plugins.postgres import admin_url

    engine = make_engine(postgres_url)
    upgrade(engine)
    owner = make_sessionmaker(engine)
    _write(owner, 3)
    role = f"vbm_svc_{uuid.uuid4().hex[:12]}"
    database = make_url(postgres_url).database
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'x'").format(sql.Identifier(role)))
    try:
        with psycopg.connect(
            make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
        ) as conn:
            for statement in (
                "REVOKE ALL ON audit_log FROM {}",
                "GRANT SELECT, INSERT ON audit_log TO {}",
                "GRANT USAGE ON SCHEMA public TO {}",
            ):
                conn.execute(sql.SQL(statement).format(sql.Identifier(role)))
        service = make_engine(make_url(postgres_url).set(username=role, password="x").render_as_string(False))
        sessions = make_sessionmaker(service)
        audit.append(sessions, actor="system:scheduler", action="run.scheduled", target="job:j")
        assert _verdict(sessions).ok and _verdict(sessions).count == 4
        with pytest.raises(ProgrammingError, match="permission denied"), sessions.begin() as s:
            s.execute(update(AuditRecord).values(result="ok"))
        with pytest.raises(ProgrammingError, match="permission denied"):
            prune(sessions, 1, T0 + timedelta(days=9), actor="system:scheduler")
        service.dispose()
        assert prune(owner, 1, T0 + timedelta(days=9), actor="os:root", source="cli").deleted == 3
    finally:
        engine.dispose()
        with psycopg.connect(admin_url(), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            with psycopg.connect(
                make_url(admin_url()).set(database=database).render_as_string(False), autocommit=True
            ) as db:
                db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
