"""`vbm repo usage` and `vbm repo measure`: the storage of every repository the catalog names, as
GET /api/v1/repositories and POST /api/v1/repositories/measure give it (shared/catalog/usage.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from shared.catalog import locations, usage
from shared.cli.runs import print_json, when
from shared.clock import utcnow
from shared.model.units import human_bytes
from shared.repo import RepoError
from shared.settings import load_settings


def run(args: argparse.Namespace) -> int:
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    settings = load_settings()
    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        if args.repo_command == "usage":
            with sessions() as s:
                views = usage.listing(s)
        else:
            views = _measure(
                sessions, locations.lookup(settings, sessions), settings.verify.usage_alert_percent
            )
    finally:
        engine.dispose()
    if args.json:
        print_json({"repositories": views})
    else:
        _table(views)
    return 1 if any("error" in v for v in views) else 0


def _measure(sessions: Any, credentials: Any, threshold: float) -> list[dict[str, Any]]:
    """Each repository listed and its sample stored, one after the other; one that cannot be
    read is named with its error and the others are still measured."""
    with sessions() as s:
        names = usage.locations(s)
    out: list[dict[str, Any]] = []
    for location in names:
        try:
            measured = asyncio.run(usage.measure(location, credentials(location)))
        except (RepoError, OSError) as exc:
            out.append({"repository": location, "error": str(exc)})
            continue
        with sessions.begin() as s:
            out.append(usage.recorded(s, location, measured, threshold, utcnow()))
    return out


def _size(n: int | None) -> str:
    return "-" if n is None else human_bytes(n)


def _table(views: list[dict[str, Any]]) -> None:
    print(f"{'used':>6} {'free':>10} {'stored':>10} {'logical':>10} {'points':>6} {'sampled':<20} repository")
    for v in views:
        if "error" in v:
            print(f"vbm repo measure: {v['repository']}: {v['error']}", file=sys.stderr)
            continue
        used = "-" if v["used_percent"] is None else f"{v['used_percent']:.0f}%"
        print(
            f"{used:>6} {_size(v['free']):>10} {_size(v['stored']):>10} {_size(v['logical']):>10}"
            f" {v['restore_points']:>6} {when(v['sampled_at']):<20} {v['repository']}"
        )
