"""`vbm job|run|backups|apikey ...`: jobs, runs, the catalog and API keys, straight on the database.

job create --name N --vcenter V --vm NAME_OR_MOREF... [--schedule S] [--no-cbt] [--quiesce]
job list | job run NAME_OR_ID
run list [--job J] | run watch RUN_ID     live progress until the run ends (exit 0: succeeded)
backups ls [--vm VM] [--job J] | backups copies [--state S] [--restore-point ID]
apikey create NAME | list | revoke NAME

The same functions as the REST API (shared.jobstore, shared.runstore, shared.apikeys).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared import apikeys, jobstore, runstore
from shared.cli_runs import backups_ls, copies_ls, run_list, watch, when
from shared.clock import utcnow
from shared.jobs import JobSpec
from shared.jobstore import iso
from shared.settings import Settings

COMMANDS = ("job", "run", "backups", "verify", "apikey")
SCHEDULE_HELP = "'cron:0 2 * * *', 'every:240' (minutes), 'daily@02:30', 'weekly@03:00', 'monthly@..'"
_MOREF = re.compile(r"^vm-\d+$")


def add_parsers(sub: Any) -> None:
    job = sub.add_parser("job", help="backup jobs: create, list, run now")
    acts = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    create = acts.add_parser("create", help="create a job (VMs are checked against vCenter)")
    create.add_argument("--name", required=True)
    create.add_argument("--vcenter", help="vCenter name (default: the only one configured)")
    create.add_argument("--vm", action="append", required=True, metavar="NAME_OR_MOREF", help="repeatable")
    create.add_argument("--schedule", help=SCHEDULE_HELP)
    create.add_argument("--timezone", default="UTC", help="of the schedule (IANA name, default UTC)")
    create.add_argument("--no-cbt", action="store_true", help="do not use Changed Block Tracking")
    create.add_argument("--quiesce", action="store_true", help="quiesce the guest (VMware Tools)")
    create.add_argument("--repository", default="", help="repository location (default: the setting)")
    create.add_argument(
        "--restore-test",
        metavar="DATASTORE",
        help="a restore-test job: test-restore the VMs' newest points there",
    )
    create.add_argument("--test-network", metavar="NETWORK", help="the isolated network of restore tests")
    create.add_argument(
        "--notify", action="append", default=[], metavar="CHANNEL", help="also tell this channel (repeatable)"
    )
    create.add_argument(
        "--notify-on",
        action="append",
        choices=("success", "warning", "failure"),
        help="outcomes of this job to send (repeatable; default: each channel's own)",
    )
    acts.add_parser("list", help="list jobs")
    run_now = acts.add_parser("run", help="run a job now")
    run_now.add_argument("job", metavar="NAME_OR_ID")

    run = sub.add_parser("run", help="runs: list, watch live progress")
    run_acts = run.add_subparsers(dest="run_command", required=True, metavar="ACTION")
    listing = run_acts.add_parser("list", help="newest runs first")
    listing.add_argument("--job", help="only runs of this job (id or name)")
    listing.add_argument("--limit", type=int, default=20)
    w = run_acts.add_parser("watch", help="progress bars until the run ends; exit 0 if it succeeded")
    w.add_argument("run_id")

    backups = sub.add_parser("backups", help="the restore point catalog")
    b_acts = backups.add_subparsers(dest="backups_command", required=True, metavar="ACTION")
    ls = b_acts.add_parser("ls", help="restore points, newest first")
    ls.add_argument("--vm", help="VM name or moref")
    ls.add_argument("--job", help="job id or name")
    ls.add_argument("--limit", type=int, default=50)
    copies = b_acts.add_parser("copies", help="copies to secondary repositories (replication), newest first")
    copies.add_argument("--state", choices=("pending", "running", "done", "failed"))
    copies.add_argument("--restore-point", help="only the copies of this restore point")
    copies.add_argument("--limit", type=int, default=50)
    verify = b_acts.add_parser("verify", help="verify a restore point now (every chunk read)")
    _verify_args(verify)
    _verify_args(sub.add_parser("verify", help="verify a restore point now (same as: backups verify)"))

    key = sub.add_parser("apikey", help="REST API keys: create, list, revoke")
    k_acts = key.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    k_acts.add_parser("create", help="create a key and print it (shown once)").add_argument("name")
    k_acts.add_parser("list", help="list keys (never their secrets)")
    k_acts.add_parser("revoke", help="revoke a key at once").add_argument("name")


def _verify_args(p: Any) -> None:
    p.add_argument("restore_point", metavar="RESTORE_POINT_ID")
    p.add_argument("--wait", action="store_true", help="wait for the result; exit 1 if it failed")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (default 3600)")


def _verify(args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
    asked = utcnow()
    with sessions.begin() as s:
        request_id = runstore.request_verify(s, args.restore_point, asked)
    print(request_id)
    if not args.wait:
        print(
            f"verification of {args.restore_point} requested; a running vbm verifies it."
            f" See the result with: vbm backups ls (or GET /api/v1/backups/{args.restore_point})",
            file=sys.stderr,
        )
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        with sessions() as s:
            row = runstore.get_backup(s, args.restore_point)
            if row.verified_at is not None and row.verified_at >= asked:
                print(f"{row.id}: {row.verify_state} ({row.verify_how}, {iso(row.verified_at)})")
                for line in row.verify_problems:
                    print(f"  problem: {line}")
                for line in row.verify_notes:
                    print(f"  note: {line}")
                return 0 if row.verify_state == "ok" else 1
        time.sleep(0.5)
    print(f"vbm verify: no result within {args.timeout:.0f}s: is vbm running (vbm up)?", file=sys.stderr)
    return 2


def parse_schedule(text: str, timezone: str = "UTC") -> dict[str, Any]:
    """'cron:EXPR' | 'every:MINUTES' | 'PRESET@HH:MM' (or just 'PRESET') as a Schedule's data."""
    kind, sep, rest = text.partition(":")
    if sep and kind == "cron":
        return {"kind": "cron", "cron": rest.strip(), "timezone": timezone}
    if sep and kind == "every":
        if not rest.strip().isdigit():
            raise ValueError(f"schedule {text!r}: every: needs whole minutes, e.g. every:240")
        return {"kind": "interval", "every_minutes": int(rest), "timezone": timezone}
    preset, _, at = text.partition("@")
    data: dict[str, Any] = {"kind": "preset", "preset": preset.strip(), "timezone": timezone}
    if at:
        data["at"] = at.strip()
    return data


def vm_ref(text: str) -> dict[str, str]:
    return {"moref": text} if _MOREF.match(text) else {"name": text}


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point for the four command groups; returns the exit code."""
    from shared.db import make_engine, make_sessionmaker, upgrade

    engine = make_engine(settings.db_url)
    try:
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        return _dispatch(args, settings, sessions)
    except (jobstore.StoreError, apikeys.ApiKeyError, ValueError) as exc:
        print(f"vbm {args.command}: {_message(exc)}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        print(
            f"vbm {args.command}: cannot use the database {where}: {exc.args[0] if exc.args else exc}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        engine.dispose()


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc']) or '(job)'}: {err['msg']}"
    return str(exc)


def _dispatch(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    action = getattr(args, f"{args.command}_command", None)
    if args.command == "job":
        if action == "create":
            return _job_create(args, settings, sessions)
        if action == "list":
            return _job_list(sessions)
        with sessions.begin() as s:
            new = jobstore.run_now(s, jobstore.find_job(s, args.job), "manual", utcnow())
            run_id, job_name = new.id, args.job
        print(run_id)
        print(
            f"run of {job_name} requested; a running vbm publishes it within a second."
            f" Follow it with: vbm run watch {run_id}",
            file=sys.stderr,
        )
        return 0
    if args.command == "run":
        if action == "watch":
            return watch(sessions, args.run_id)
        return run_list(sessions, args.job, args.limit)
    if args.command == "verify" or (args.command == "backups" and action == "verify"):
        return _verify(args, sessions)
    if args.command == "backups" and action == "copies":
        return copies_ls(sessions, args.state, args.restore_point, args.limit)
    if args.command == "backups":
        return backups_ls(sessions, args.vm, args.job, args.limit)
    return _apikey(str(action), args, sessions)


def _job_create(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    vcenter = args.vcenter
    if vcenter is None:
        if len(settings.vcenters) != 1:
            raise jobstore.Invalid("vcenter", "give --vcenter (configured: " + _vcenter_names(settings) + ")")
        vcenter = settings.vcenters[0].name
    body: dict[str, Any] = {
        "name": args.name,
        "vcenter": vcenter,
        "vms": [vm_ref(v) for v in args.vm],
        "options": {
            "cbt": not args.no_cbt,
            "quiesce": args.quiesce,
            "notify": {"channels": args.notify, "on": args.notify_on},
        },
        "repository": args.repository,
    }
    if args.schedule:
        body["schedule"] = parse_schedule(args.schedule, args.timezone)
    if args.restore_test:
        if not args.test_network:
            raise jobstore.Invalid(
                "test-network", "a restore-test job needs --test-network (an isolated network)"
            )
        body["options"]["restore_test"] = {"datastore": args.restore_test, "network": args.test_network}
    spec = jobstore.check_spec(sessions, JobSpec.model_validate(body), settings)
    with sessions.begin() as s:
        job = jobstore.create_job(s, spec, utcnow(), settings.repository_location)
        view = jobstore.job_view(job)
    vms = ", ".join(f"{v['name']} ({v['moref']})" for v in view["vms"])
    print(f"created job {view['id']} {view['name']!r}: {vms}; repository {view['repository']}")
    return 0


def _vcenter_names(settings: Settings) -> str:
    return ", ".join(vc.name for vc in settings.vcenters) or "none; set VBM_VCENTERS"


def _schedule_text(schedule: dict[str, Any] | None) -> str:
    if not schedule:
        return "manual"
    if schedule["kind"] == "cron":
        return f"cron {schedule['cron']}"
    if schedule["kind"] == "interval":
        return f"every {schedule['every_minutes']} min"
    return f"{schedule['preset']}@{schedule.get('at', '02:00')}"


def _job_list(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        jobs = [jobstore.job_view(j) for j in jobstore.list_jobs(s)]
    print(f"{'id':<14} {'name':<24} {'vcenter':<10} {'vms':>3}  {'schedule':<20} enabled")
    for j in jobs:
        sched = _schedule_text(j["schedule"])
        name, vcenter = j["name"][:24], j["vcenter"][:10]
        print(f"{j['id']:<14} {name:<24} {vcenter:<10} {len(j['vms']):>3}  {sched:<20} {j['enabled']}")
    return 0


def _apikey(action: str, args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
    if action == "create":
        with sessions.begin() as s:
            info, key = apikeys.create(s, args.name, utcnow())
        print(key)
        print(f"API key {info.name!r} created: store it now, it is not shown again", file=sys.stderr)
        return 0
    if action == "revoke":
        with sessions.begin() as s:
            info = apikeys.revoke(s, args.name, utcnow())
        print(f"API key {info.name!r} revoked")
        return 0
    with sessions() as s:
        keys = apikeys.list_keys(s)
    print(f"{'name':<24} {'id':<16} {'created':<21} {'last used':<21} revoked")
    for k in keys:
        print(
            f"{k.name[:24]:<24} {k.id:<16} {when(jobstore.iso(k.created_at)):<21}"
            f" {when(jobstore.iso(k.last_used_at)):<21} {when(jobstore.iso(k.revoked_at))}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shared.cli_jobs ...`: these commands without the rest of `vbm`."""
    from shared.settings import ConfigError, load_settings

    parser = argparse.ArgumentParser(prog="vbm")
    add_parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"vbm: {exc}", file=sys.stderr)
        return 2
    return run(args, settings)


if __name__ == "__main__":
    raise SystemExit(main())
