"""`python -m bench.catalog [--points N] [--db-url URL]`: how fast a page of a large catalog lists.

It fills a fresh database (SQLite in a temp dir, or the PostgreSQL URL given) with N restore
points (default 10,000: 200 VMs of 10 jobs on 2 vCenters, 50 points each), then times what
`GET /api/v1/backups` does for a page of 50 (the query string parsed into a window, the catalog's
query with its count, the views, the JSON text), for the first page, a page deep by offset, a
page deep by cursor, a filtered page and a time window; against a baseline measured in the same
run: the bare SELECT of the same 50 rows. Each figure is the median of 25 runs; the ratio to the
baseline is what to compare between machines (shared and noisy ones too). Goal (issue 19): every
page under 100 ms for 10,000 points.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import runs as runstore
from shared.catalog.listing import Window
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import RestorePointRow

FILTERS = ("vm", "job", "vcenter", "verify")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fill(sessions: sessionmaker[Session], points: int) -> None:
    vms = 200
    with sessions.begin() as s:
        for i in range(points):
            vm = i % vms
            at = T0 + timedelta(hours=i)
            s.add(
                RestorePointRow(
                    id=f"rp-{i:08d}", task_id=f"t-{i}", run_id=f"run-{i // vms}", job_id=f"job-{vm % 10}",
                    vcenter=f"vc{vm % 2 + 1}", vm_moref=f"vm-{vm}", vm_name=f"app{vm:03d}",
                    repository="/repo", kind="full" if i < vms else "incremental",
                    parent=None if i < vms else f"rp-{i - vms:08d}",
                    disks=[{"key": 2000, "size": 40 << 30, "changed": 1 << 30}],
                    logical_bytes=40 << 30, bytes_read=1 << 30, bytes_stored=300 << 20,
                    started_at=at - timedelta(minutes=5), finished_at=at,
                    verify_state="ok" if i % 7 else "pending", verify_problems=[], verify_notes=[],
                )
            )  # fmt: skip


def api_page(sessions: sessionmaker[Session], query: dict[str, str]) -> Callable[[], Any]:
    def run() -> Any:
        window = Window.parse(query, FILTERS)
        with sessions() as s:
            found = runstore.list_backups(
                s, window, vm=query.get("vm"), job=query.get("job"), vcenter=query.get("vcenter"),
                verify=query.get("verify"),
            )  # fmt: skip
            answer = found.answer("backups", [runstore.backup_view(r) for r in found.rows], window)
        return json.dumps(answer, default=str), found.next_cursor

    return run


def bare_select(sessions: sessionmaker[Session]) -> Callable[[], Any]:
    def run() -> Any:
        with sessions() as s:
            query = select(RestorePointRow).order_by(
                RestorePointRow.finished_at.desc(), RestorePointRow.id.desc()
            )
            return list(s.scalars(query.limit(50)))

    return run


def median_ms(fn: Callable[[], Any], times: int = 25) -> float:
    fn()  # warm: the first run pays for statement compilation
    took = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.catalog", description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument(
        "--db-url", help="a PostgreSQL URL of an empty database (default: SQLite in a temp dir)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        start = time.perf_counter()
        fill(sessions, args.points)
        print(f"catalog: {args.points} restore points in {engine.url.get_backend_name()}"
              f" (filled in {time.perf_counter() - start:.1f} s)")  # fmt: skip
        base = median_ms(bare_select(sessions))
        _, cursor = api_page(sessions, {"limit": "50", "offset": str(args.points - 1000)})()
        deep_cursor = cursor or ""
        cases = {
            "first page": {"limit": "50"},
            f"offset {args.points - 1000}": {"limit": "50", "offset": str(args.points - 1000)},
            "by cursor, deep": {"limit": "50", "cursor": deep_cursor},
            "one VM (vm=app042)": {"limit": "50", "vm": "app042"},
            "one vCenter, verify=pending": {"limit": "50", "vcenter": "vc2", "verify": "pending"},
            "a week (since/until)": {
                "limit": "50",
                "since": "2026-03-01T00:00:00Z",
                "until": "2026-03-08T00:00:00Z",
            },
        }
        print(f"{'baseline: bare SELECT of 50 rows':<40} {base:8.2f} ms")
        worst = 0.0
        for name, query in cases.items():
            took = median_ms(api_page(sessions, query))
            worst = max(worst, took)
            print(f"{'GET /backups ' + name:<40} {took:8.2f} ms   x{took / base:5.1f} of the baseline")
        print(f"slowest page: {worst:.1f} ms (goal: under 100 ms) -> {'ok' if worst < 100 else 'TOO SLOW'}")
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
