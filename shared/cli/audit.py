"""`vbm audit` (read and export the audit log), `vbm audit verify` (is the chain whole?) and
`vbm audit prune` (let records older than `audit.retention_days` go; itself recorded).

They read the database directly, as every vbm command does. What the command line does on its
own (`vbm audit prune`, `vbm prune`, `vbm gc`) is recorded with the operating system's user as
the actor (`os:alice`) and `cli` as the source.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Any

from shared.settings import Settings

COMMANDS = ("audit",)


def add_parsers(sub: Any) -> None:
    a = sub.add_parser("audit", help="the audit log: list, export, verify the chain, prune")
    acts = a.add_subparsers(dest="audit_command", metavar="ACTION")
    ls = acts.add_parser("ls", help="records, newest first (the default action)")
    for parser in (a, ls):  # `ls` only sets what it is given (else it would reset what came before it)
        kw: dict[str, Any] = {"default": argparse.SUPPRESS} if parser is ls else {}
        parser.add_argument("--user", help="who: a user (their keys too), os:NAME, system:SERVICE or -", **kw)
        parser.add_argument("--action", help="part of the action (e.g. DELETE, login, prune)", **kw)
        parser.add_argument(
            "--target", help="what, exactly (job:nightly), or a prefix ending in * (job:*)", **kw
        )
        parser.add_argument("--vm", help="part of a VM's name or moref in the target or parameters", **kw)
        parser.add_argument("--result", choices=("ok", "error"), **kw)
        parser.add_argument("--since", help="from this time (ISO 8601, UTC when no zone)", **kw)
        parser.add_argument("--until", help="before this time (ISO 8601)", **kw)
        parser.add_argument("--limit", type=int, help="at most this many (default 50; exports: all)", **kw)
        parser.add_argument(
            "--cursor", type=int, help="the next_cursor of the page before (--json shows it)", **kw
        )
        parser.add_argument(
            "--json", action="store_true", help="the page as GET /api/v1/audit answers it", **kw
        )
        parser.add_argument("--format", choices=("csv", "jsonl"), help="export to stdout", **kw)
    verify = acts.add_parser(
        "verify", help="recompute the hash chain; name the first record changed or removed"
    )
    prune = acts.add_parser("prune", help="remove records older than audit.retention_days (recorded)")
    for parser in (verify, prune):
        parser.add_argument("--json", action="store_true", help="what was found, as JSON")


def actor() -> str:
    """Who runs the command: the operating system's user."""
    try:
        return f"os:{getpass.getuser()}"
    except Exception:  # no name for this uid (a container)
        return "os:-"


def run(args: argparse.Namespace, settings: Settings) -> int:
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    action = args.audit_command or "ls"
    filters = _filters(args) if action == "ls" else None
    if action == "ls" and filters is None:
        return 2
    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        if action == "verify":
            return _verify(sessions, args.json)
        if action == "prune":
            return _prune(sessions, settings, args.json)
        assert filters is not None
        return _list(sessions, filters, args)
    finally:
        engine.dispose()


def _time(name: str, raw: str | None) -> datetime | None:
    if raw is None:
        return None
    when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _filters(args: argparse.Namespace) -> Any:
    from shared.catalog.audit import Filters

    times: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            times[name] = _time(name, getattr(args, name))
        except ValueError:
            print(f"vbm audit: --{name}: {getattr(args, name)!r} is not an ISO 8601 time", file=sys.stderr)
            return None
    if args.limit is not None and args.limit < 1:
        print("vbm audit: --limit: must be 1 or more", file=sys.stderr)
        return None
    return Filters(
        user=args.user, action=args.action, target=args.target, vm=args.vm, result=args.result, **times
    )


def _list(sessions: Any, filters: Any, args: argparse.Namespace) -> int:
    from shared.catalog import audit

    if args.format:
        if args.format == "csv":
            sys.stdout.write(audit.csv_line(audit.COLUMNS))
        for row in audit.iterate(sessions, filters, limit=args.limit):
            sys.stdout.write(audit.export_line(row, args.format))
        return 0
    with sessions() as s:
        page = audit.page(s, filters, limit=args.limit or 50, cursor=args.cursor)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    rows = page["records"]
    for r in rows:
        print(
            f"{r['id']:>7} {datetime.fromisoformat(r['at']):%Y-%m-%d %H:%M:%S} {r['actor']:<24}"
            f" {r['source']:<15} {r['action']} {r['target'] or '-'} {r['result']}"
        )
    if not rows:
        print("no audit records match", file=sys.stderr)
    return 0


def _verify(sessions: Any, as_json: bool) -> int:
    from shared.catalog.audit_chain import verify

    with sessions() as s:
        v = verify(s)
    if as_json:
        print(json.dumps({"ok": v.ok, **dataclasses.asdict(v)}, indent=2))
        return 0 if v.ok else 1
    if not v.ok:
        print(f"vbm audit verify: BROKEN at record {v.record_id}: {v.problem}", file=sys.stderr)
        return 1
    if v.count == 0:
        print("the audit log is empty")
        return 0
    start = f"from record {v.first_id} (the anchor the last prune kept)" if v.anchored else "from record 1"
    print(f"the audit log is intact: {v.count} records {start} to {v.last_id}; newest hash {v.last_hash}")
    return 0


def _prune(sessions: Any, settings: Settings, as_json: bool) -> int:
    from shared.catalog.audit_chain import prune
    from shared.clock import utcnow

    days = settings.audit.retention_days
    try:
        done = prune(sessions, days, utcnow(), actor=actor(), source="cli")
    except Exception as exc:  # e.g. a PostgreSQL role that may not DELETE from audit_log
        print(f"vbm audit prune: not pruned: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"retention_days": days, **dataclasses.asdict(done)}, indent=2, default=str))
        return 0
    print(
        f"{done.deleted} audit record(s) older than {days} days removed;"
        f" record {done.anchor_id} is the chain's anchor now; the prune is record {done.record_id}"
    )
    return 0
