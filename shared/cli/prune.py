"""`vbm prune` (retention, with a preview) and `vbm gc` (reclaim unreferenced chunks); with
`--json`, what GET/POST /api/v1/prune and POST /api/v1/gc answer."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from typing import Any

from shared.catalog import audit, locations, prune
from shared.cli.audit import actor
from shared.cli.runs import print_json
from shared.clock import utcnow
from shared.settings import Settings


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("prune", help="remove restore points retention lets go (see --dry-run first)")
    p.add_argument("--dry-run", action="store_true", help="only show each point: keep or remove, and why")
    p.add_argument("--job", help="only this job (id)")
    p.add_argument("--vm", help="only this VM (name or moref)")
    p.add_argument(
        "--json", action="store_true", help="as JSON (as GET /api/v1/prune, or POST without --dry-run)"
    )
    g = sub.add_parser("gc", help="reclaim chunks no restore point references (after prune)")
    g.add_argument("--dry-run", action="store_true", help="count what would be freed, delete nothing")
    g.add_argument(
        "--repository", help="default: every repository in the catalog, and the secondaries copies went to"
    )
    g.add_argument("--json", action="store_true", help="as JSON (as POST /api/v1/gc)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        if args.command == "prune":
            return _prune(args, settings, sessions, utcnow())
        return _gc(args, settings, sessions, utcnow())
    finally:
        engine.dispose()


def _prune(args: argparse.Namespace, settings: Settings, sessions: Any, now: datetime) -> int:
    if args.dry_run:
        with sessions() as s:
            views = prune.with_expiry(s, settings, now, job_id=args.job, vm=args.vm)
        if args.json:
            print_json({"restore_points": views})
            return 0
        for v in views:
            until = f"until {v['expires_at']}" if v["action"] == "keep" and v["expires_at"] else ""
            print(
                f"{v['action']:<6} {v['id']}  {v['vm_name']:<20} {v['finished_at']}"
                f"  {v['rule']}  {until}".rstrip()
            )
        return 0
    done = asyncio.run(prune.apply(sessions, settings, now, job_id=args.job, vm=args.vm))
    scope = " ".join(f"{k}:{v}" for k, v in (("job", args.job), ("vm", args.vm)) if v)
    removed = [{"id": rp_id, "rule": reason} for rp_id, reason in done]
    audit.try_append(
        sessions, actor=actor(), source="cli", action="prune", target=scope, params={"removed": removed}
    )
    if args.json:
        print_json({"removed": removed})
    else:
        for rp_id, reason in done:
            print(f"removed {rp_id}: {reason}")
    print(f"{len(done)} restore point(s) removed; run `vbm gc` to reclaim their chunks", file=sys.stderr)
    return 0


def _gc(args: argparse.Namespace, settings: Settings, sessions: Any, now: datetime) -> int:
    """Every repository in turn; the first that fails ends it (exit 1), as the API's 409 does."""
    from shared.repo import RepoError

    with sessions() as s:
        places = [args.repository] if args.repository else prune.repositories(s)
    out = []
    for location in places:
        try:
            report = asyncio.run(
                prune.collect_garbage(
                    sessions,
                    location,
                    locations.lookup(settings, sessions)(location),
                    now,
                    dry_run=args.dry_run,
                )
            )
        except RepoError as exc:
            print(f"vbm gc: {location}: {exc}", file=sys.stderr)
            _audit_gc(sessions, location, {}, f"error: {exc}")
            return 1
        if not args.dry_run:
            figures = {"chunks_removed": report.chunks_removed, "bytes_removed": report.bytes_removed}
            _audit_gc(sessions, location, figures, "ok")
        out.append(prune.gc_view(location, report, args.dry_run))
        if not args.json:
            print(_gc_line(location, report, args.dry_run))
    if args.json:
        print_json({"repositories": out})
    return 0


def _gc_line(location: str, report: Any, dry_run: bool) -> str:
    verb = "would free" if dry_run else "freed"
    return (
        f"{location}: {report.restore_points} restore points,"
        f" {report.chunks_referenced} chunks in use;"
        f" {verb} {report.chunks_removed} chunks ({report.bytes_removed} bytes);"
        f" {report.chunks_spared_young} unreferenced but too recent (a backup may be using them)"
        + (
            f"; {report.leftovers_removed} leftovers of dead writes removed"
            if report.leftovers_removed
            else ""
        )
        + (
            f"; {report.chunks_put_back} chunks a dead GC had moved aside put back"
            if report.chunks_put_back
            else ""
        )
        + ("; stopped early (its time was up): run vbm gc again" if report.stopped_early else "")
    )


def _audit_gc(sessions: Any, location: str, figures: dict[str, object], result: str) -> None:
    audit.try_append(
        sessions, actor=actor(), source="cli", action="gc", target=f"repository:{location}",
        params=figures, result=result,
    )  # fmt: skip
