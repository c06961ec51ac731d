"""`vbm run list|show|watch|cancel|log`: runs on the terminal; `--json` prints what the REST API
answers (GET /api/v1/runs, /runs/{id}, /runs/{id}/log, POST /runs/{id}/cancel).

`vbm run watch RUN_ID` shows a run's tasks as progress bars, refreshed from the database.

On a terminal the block of lines is redrawn in place every half second; otherwise (a pipe, a log)
a line is printed only when what it shows changes. Exit code: 0 when the run succeeded, 1 when it
ended otherwise or does not exist.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import jobs as jobstore
from shared.catalog import runs as runstore
from shared.catalog.listing import Window
from shared.catalog.runs import eta_seconds, get_run
from shared.contracts import RUN_FINAL as FINISHED
from shared.contracts import TASK_FINAL
from shared.db.models import Run, Task
from shared.errors import NotFound
from shared.model.units import human_bytes

REFRESH = 0.5
BAR = 24


def add_parsers(sub: Any) -> None:
    run = sub.add_parser("run", help="runs: list, watch live progress")
    run_acts = run.add_subparsers(dest="run_command", required=True, metavar="ACTION")
    listing = run_acts.add_parser("list", help="newest runs first")
    listing.add_argument("--job", help="only runs of this job (id or name)")
    listing.add_argument("--state", help="only runs in this state (queued, running, succeeded, failed, ...)")
    listing.add_argument("--limit", type=int, default=20)
    _json(listing, "the page as JSON (as GET /api/v1/runs)")
    show = run_acts.add_parser("show", help="a run and its tasks")
    show.add_argument("run_id")
    _json(show, "the run as JSON (as GET /api/v1/runs/{id})")
    w = run_acts.add_parser("watch", help="progress bars until the run ends; exit 0 if it succeeded")
    w.add_argument("run_id")
    cancel = run_acts.add_parser("cancel", help="stop a run (its snapshots are removed)")
    cancel.add_argument("run_id")
    _json(cancel, "the run as JSON (as POST /api/v1/runs/{id}/cancel)")
    log = run_acts.add_parser("log", help="what happened to a run, in words")
    log.add_argument("run_id")
    log.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until it ends")
    _json(log, "the lines as JSON (as GET /api/v1/runs/{id}/log); not with --follow")


def _json(parser: Any, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=what)


def print_json(document: Any) -> None:
    """What a command prints with --json: the API's answer, and nothing else on stdout."""
    print(json.dumps(document, indent=2))


def dispatch(args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
    """`vbm run ACTION`."""
    if args.run_command == "watch":
        return watch(sessions, args.run_id)
    if args.run_command == "log":
        if args.json:
            with sessions() as s:
                print_json(runstore.log_view(s, args.run_id))
            return 0
        return run_log(sessions, args.run_id, args.follow)
    if args.run_command == "show":
        return run_show(sessions, args.run_id, args.json)
    if args.run_command == "cancel":
        with sessions.begin() as s:
            view = runstore.run_view(jobstore.cancel_run(s, args.run_id))
        if args.json:
            print_json(view)
        else:
            print(f"cancel requested for run {args.run_id}; its movers stop within a second")
        return 0
    return run_list(sessions, args.job, args.limit, args.state, args.json)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def task_line(task: Task, several_vcenters: bool = False) -> str:
    """One task's progress; its VM named with its vCenter when the run spans several (VM names
    repeat across vCenters)."""
    vm = f"{task.vm_name[:20]} on {task.vcenter}" if several_vcenters else task.vm_name[:20]
    total, done = task.bytes_total, min(task.bytes_done, task.bytes_total or task.bytes_done)
    moved = task.phase in ("verify", "done") or task.state == "succeeded"  # its transfer is over
    frac = done / total if total else (1.0 if moved or task.finished_at else 0.0)
    bar = "#" * int(frac * BAR) + "-" * (BAR - int(frac * BAR))
    text = (
        f"{vm:<20} {task.phase[:10]:<10} {task.state[:10]:<10} [{bar}] {frac * 100:3.0f}%"
        f" {human_bytes(done)} / {human_bytes(total)}  {human_bytes(task.rate)}/s"
        f"  ETA {_eta(eta_seconds(task))}"
    )
    if task.wait_reason and task.state not in TASK_FINAL:
        text += f"  ({task.wait_reason})"
    elif task.error:
        text += f"  error: {task.error}"
    for warning in task.warnings or []:
        text += f"\n{'':<20} warning: {warning}"
    return text


def run_line(run: Run) -> str:
    text = f"run {run.id} of job {run.job_id}: {run.state}"
    if run.wait_reason and run.state == "queued":
        text += f" ({run.wait_reason})"
    if run.cancel_requested and run.state not in FINISHED:
        text += " (cancel requested)"
    return text + (f": {run.error}" if run.error else "")


def watch(sessions: sessionmaker[Session], run_id: str, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    tty = stream.isatty()
    drawn = 0
    last: list[str] = []
    while True:
        with sessions() as session:
            try:
                run, tasks = get_run(session, run_id)
            except NotFound as exc:
                print(f"vbm run watch: {exc}", file=sys.stderr)
                return 1
            several = len({t.vcenter for t in tasks}) > 1
            lines = [run_line(run), *(task_line(t, several) for t in tasks)]
            state = run.state
        if tty:
            if drawn:
                stream.write(f"\x1b[{drawn}F")
            stream.write("".join(f"{line}\x1b[K\n" for line in lines))
            drawn = len(lines)
        else:
            for line in lines:
                if line not in last:
                    stream.write(line + "\n")
            last = lines
        stream.flush()
        if state in FINISHED:
            return 0 if state in ("succeeded", "warning") else 1
        time.sleep(REFRESH)


def when(text: str | None) -> str:
    """An API timestamp ('2026-11-26T09:00:00.123Z') as a table shows it."""
    return text[:19].replace("T", " ") if text else "-"


def run_show(sessions: sessionmaker[Session], run_id: str, as_json: bool) -> int:
    """The run and its tasks: as JSON, or as `watch` draws it once."""
    with sessions() as s:
        if as_json:
            print_json(runstore.run_detail(s, run_id))
            return 0
        run, tasks = get_run(s, run_id)
        several = len({t.vcenter for t in tasks}) > 1
        for line in (run_line(run), *(task_line(t, several) for t in tasks)):
            print(line)
    return 0


def run_list(
    sessions: sessionmaker[Session],
    job: str | None,
    limit: int,
    state: str | None = None,
    as_json: bool = False,
) -> int:
    with sessions() as s:
        job_id = jobstore.find_job(s, job).id if job else None
        window = Window.parse({"limit": str(limit)})
        found = runstore.list_runs(s, window, job=job_id, state=state)
        total, runs = found.total, found.rows
        views = [runstore.run_view(r) for r in runs]
    if as_json:
        print_json(found.answer("runs", views, window))
        return 0
    print(f"{'run':<44} {'state':<10} {'trigger':<9} created")
    for r in views:
        print(f"{r['id']:<44} {r['state']:<10} {r['trigger']:<9} {when(r['created_at'])}")
    print(f"{len(views)} of {total} runs", file=sys.stderr)
    return 0


def run_log(sessions: sessionmaker[Session], run_id: str, follow: bool) -> int:
    """Print the run's log; with `follow`, new lines as they come until the run has ended."""
    from shared.catalog import runlog

    last = 0
    while True:
        with sessions() as s:
            run, tasks = get_run(s, run_id)
            ended = run.state in FINISHED
            lines = runlog.lines(s, run_id, after=last)
        vcenters = {t.id: t.vcenter for t in tasks}
        several = len(set(vcenters.values())) > 1  # a task's lines name its vCenter: VM names repeat
        for line in lines:
            at = line["at"].strftime("%Y-%m-%d %H:%M:%S")
            where = f"[{vcenters[line['task_id']]}] " if several and line["task_id"] in vcenters else ""
            print(f"{at} {line['level']:<7} {where}{line['message']}", flush=True)
            last = line["id"]
        if not follow or (ended and not lines):
            return 0
        time.sleep(REFRESH)
