"""`vbm logs`: the logs of `vbm up`'s services, read back from `<data_dir>/logs/*.jsonl` (written
by the supervisor, shared/observe/logfiles.py): all services merged in time order, or one
(`--service`), of one run (`--run`: the lines that carry its run_id), then new lines as they come
(`--follow`, until Ctrl-C). Readable lines, or the JSON objects themselves (`--json`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shared.observe import logfiles
from shared.observe.logs import render
from shared.settings import Settings

COMMANDS = ("logs",)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("logs", help="the logs of `vbm up`'s services (of one run, one service; --follow)")
    p.add_argument("--run", metavar="ID", help="only the lines of this run (they carry its run_id)")
    p.add_argument("--service", metavar="NAME", help="only this service (gateway, scheduler, mover, ...)")
    p.add_argument("--follow", "-f", action="store_true", help="then new lines as they come (Ctrl-C ends)")
    p.add_argument("--json", action="store_true", help="one JSON object a line, as stored")


def run(args: argparse.Namespace, settings: Settings) -> int:
    directory = logfiles.logs_dir(settings.data_dir)
    known = logfiles.services_in(directory) if directory.is_dir() else []
    if not known:
        print(
            f"vbm logs: no logs in {directory}: they are written by `vbm up` (is VBM_DATA_DIR the one"
            " it runs with?)",
            file=sys.stderr,
        )
        return 1
    if args.service and args.service not in known:
        print(f"vbm logs: no log of service {args.service!r}; there are: {', '.join(known)}", file=sys.stderr)
        return 2
    shown = 0
    for record in logfiles.read(directory, service=args.service, run=args.run):
        _show(record, args.json)
        shown += 1
    if args.follow:
        try:
            for record in logfiles.follow(directory, service=args.service, run=args.run):
                _show(record, args.json)
        except KeyboardInterrupt:
            return 0
    elif args.run and not shown:
        print(f"vbm logs: no line of run {args.run} (a run id, as `vbm run list` shows)", file=sys.stderr)
        return 1
    return 0


def _show(record: dict[str, Any], as_json: bool) -> None:
    print(json.dumps(record, ensure_ascii=False) if as_json else render(record), flush=True)
