"""`vbm prune` (retention, with a preview) and `vbm gc` (reclaim unreferenced chunks)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from shared.catalog import audit, locations, prune
from shared.cli.audit import actor
from shared.clock import utcnow
from shared.settings import Settings


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("prune", help="remove restore points retention lets go (see --dry-run first)")
    p.add_argument("--dry-run", action="store_true", help="only show each point: keep or remove, and why")
    p.add_argument("--job", help="only this job (id)")
    p.add_argument("--vm", help="only this VM (name or moref)")
    g = sub.add_parser("gc", help="reclaim chunks no restore point references (after prune)")
    g.add_argument("--dry-run", action="store_true", help="count what would be freed, delete nothing")
    g.add_argument(
        "--repository", help="default: every repository in the catalog, and the secondaries copies went to"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing
    from shared.repo import RepoError

    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        now = utcnow()
        if args.command == "prune":
            if args.dry_run:
                with sessions() as s:
                    for v in prune.with_expiry(s, settings, now, job_id=args.job, vm=args.vm):
                        until = (
                            f"until {v['expires_at']}" if v["action"] == "keep" and v["expires_at"] else ""
                        )
                        print(
                            f"{v['action']:<6} {v['id']}  {v['vm_name']:<20} {v['finished_at']}"
                            f"  {v['rule']}  {until}".rstrip()
                        )
                return 0
            done = asyncio.run(prune.apply(sessions, settings, now, job_id=args.job, vm=args.vm))
            scope = " ".join(f"{k}:{v}" for k, v in (("job", args.job), ("vm", args.vm)) if v)
            removed = [{"id": rp_id, "rule": reason} for rp_id, reason in done]
            audit.try_append(
                sessions,
                actor=actor(),
                source="cli",
                action="prune",
                target=scope,
                params={"removed": removed},
            )
            for rp_id, reason in done:
                print(f"removed {rp_id}: {reason}")
            print(
                f"{len(done)} restore point(s) removed; run `vbm gc` to reclaim their chunks", file=sys.stderr
            )
            return 0
        with sessions() as s:
            places = [args.repository] if args.repository else prune.repositories(s)
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
            verb = "would free" if args.dry_run else "freed"
            print(
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
        return 0
    finally:
        engine.dispose()


def _audit_gc(sessions: Any, location: str, figures: dict[str, object], result: str) -> None:
    audit.try_append(
        sessions, actor=actor(), source="cli", action="gc", target=f"repository:{location}",
        params=figures, result=result,
    )  # fmt: skip
