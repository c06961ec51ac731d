"""`vbm events`: follow live events from the command line (docs/api.md, "Live events").

The CLI works on the database, as every `vbm` command does, so it follows the same source as
`GET /api/v1/events`: the event log (state changes and alerts, each with its id, never lost) and
the progress the movers write every second (printed when it changes). `--after ID` resumes after an
event id (as `Last-Event-ID` does); `--once` prints what is there and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import events as store
from shared.model.live import BadQuery, Filter
from shared.model.units import human_bytes
from shared.settings import Settings

COMMANDS = ("events",)
POLL = 0.5


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("events", help="follow live events: state changes, progress, alerts (Ctrl-C ends)")
    p.add_argument("--run", action="append", default=[], metavar="RUN_ID", help="only about this run")
    p.add_argument("--job", action="append", default=[], metavar="JOB_ID", help="only about this job's runs")
    p.add_argument("--restore", action="append", default=[], metavar="RESTORE_ID", help="only this restore")
    p.add_argument(
        "--type", action="append", default=[], metavar="TYPE",
        help="only these: run, task, restore, replication, alert, progress (repeat, or comma-separated)",
    )  # fmt: skip
    p.add_argument("--after", type=int, default=None, metavar="ID", help="start after this event id")
    p.add_argument("--once", action="store_true", help="print the events there are and exit")
    p.add_argument("--json", action="store_true", help="one JSON object a line")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    try:
        wanted = Filter.parse({"run": args.run, "job": args.job, "restore": args.restore, "type": args.type})
    except BadQuery as exc:
        print(f"vbm events: --{exc}", file=sys.stderr)
        return 2
    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        return follow(make_sessionmaker(engine), wanted, args.after, once=args.once, as_json=args.json)
    except KeyboardInterrupt:
        return 0
    finally:
        engine.dispose()


def follow(
    sessions: sessionmaker[Session], wanted: Filter, after: int | None, *, once: bool, as_json: bool
) -> int:
    with sessions() as s:
        oldest, newest = store.bounds(s)
    cursor = newest if after is None else after
    if after is not None and after < newest and after < oldest - 1:
        _print(
            {"type": "reset", "reason": f"events after {after} are no longer kept (oldest {oldest})"}, as_json
        )
        cursor = oldest - 1
    samples: dict[str, dict[str, Any]] = {}
    while True:
        with sessions() as s:
            rows = store.after(s, cursor, limit=1000)
            progress = {p["key"]: p for p in store.progress(s)} if not once else {}
        for row in rows:
            cursor = row.id
            event = store.view(row)
            if wanted.matches(event):
                _print(event, as_json)
        for key, sample in progress.items():
            if samples.get(key) != sample and wanted.matches(sample):
                _print(sample, as_json)
        samples = progress
        if once and len(rows) < 1000:
            return 0
        if len(rows) < 1000:
            time.sleep(POLL)


def _print(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event, default=str), flush=True)
        return
    print(line(event), flush=True)


def line(event: dict[str, Any]) -> str:
    """One event in words: `#12 task.state run-1 web: downloading (running)`."""
    kind = event["type"]
    head = f"#{event['id']} " if event.get("id") is not None else ""
    what = event.get("vm_name") or event.get("restore_id") or event.get("run_id") or ""
    if kind == "progress":
        eta = f", {event['eta_s']:.0f} s left" if event.get("eta_s") is not None else ""
        done, total = human_bytes(event["bytes_done"]), human_bytes(event["bytes_total"])
        about = event.get("run_id") or event.get("restore_id")
        return f"progress {about} {what}: {event['phase']} {done} of {total}{eta}"
    if kind == "alert.raised":
        return f"{head}alert {event['severity']}: {event['message']}"
    if kind in ("reset", "dropped"):
        return f"{kind}: {event['reason']}"
    phase = f" {event['phase']}" if event.get("phase") else ""
    error = f": {event['error']}" if event.get("error") else ""
    return f"{head}{kind} {event.get('run_id') or ''} {what}:{phase} ({event.get('state')}){error}"
