"""`vbm job|run|backups|apikey|vm ...`: jobs, runs, the catalog, API keys and VMs.

job create --name N --vcenter V --vm NAME_OR_MOREF... [--schedule S] [--keep-daily N ...]
job list | show J | run J | cancel J | edit J [...] | enable J | disable J | delete J [--force]
run list [--job J] | run watch RUN_ID | run cancel RUN_ID
backups ls [--vm VM] [--job J] | backups copies [--state S] [--restore-point ID]
apikey create NAME | list | revoke NAME
vm ls [--vcenter V]

The same functions as the REST API (shared.catalog.jobs, shared.catalog.runs, shared.catalog.apikeys).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import apikeys
from shared.catalog import jobs as jobstore
from shared.catalog import runs as runstore
from shared.cli import jobspec
from shared.cli.runs import backups_ls, copies_ls, run_list, run_log, watch, when
from shared.clock import iso, utcnow
from shared.errors import Invalid, StoreError, Unreachable
from shared.model.jobs import JobSpec
from shared.model.units import human_bytes
from shared.settings import Settings

COMMANDS = ("job", "run", "backups", "verify", "apikey", "vm")
parse_schedule = jobspec.parse_schedule  # the CLI's schedule syntax (tests and callers use it here)


def add_parsers(sub: Any) -> None:
    job = sub.add_parser("job", help="backup jobs: create, list, show, edit, run, cancel, delete")
    acts = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    create = acts.add_parser("create", help="create a job (VMs are checked against vCenter)")
    create.add_argument("--name", required=True)
    create.add_argument("--vcenter", help="vCenter name (default: the only one configured)")
    create.add_argument(
        "--vm", action="append", default=[], metavar="NAME_OR_MOREF", help="repeatable (or --select-...)"
    )
    jobspec.add_spec_args(create, editing=False)
    create.add_argument(
        "--restore-test",
        metavar="DATASTORE",
        help="a restore-test job: test-restore the VMs' newest points there",
    )
    create.add_argument("--test-network", metavar="NETWORK", help="the isolated network of restore tests")
    create.add_argument("--disabled", action="store_true", help="create it disabled (no scheduled runs)")
    acts.add_parser("list", help="list jobs")
    for name, text in (
        ("show", "one job as JSON"),
        ("preview", "the VMs the job holds today (its selectors resolved now), and why each"),
        ("run", "run a job now"),
        ("cancel", "stop the job's running runs (snapshots are removed)"),
        ("enable", "scheduled runs happen again"),
        ("disable", "no scheduled runs (run it by hand still works)"),
    ):
        acts.add_parser(name, help=text).add_argument("job", metavar="NAME_OR_ID")
    edit = acts.add_parser("edit", help="change a job: only what the options name")
    edit.add_argument("job", metavar="NAME_OR_ID")
    jobspec.add_spec_args(edit, editing=True)
    delete = acts.add_parser("delete", help="delete a job (its restore points stay)")
    delete.add_argument("job", metavar="NAME_OR_ID")
    delete.add_argument("--force", action="store_true", help="even while it runs (the run is cancelled)")
    delete.add_argument("--yes", action="store_true", help="do not ask")

    vm = sub.add_parser("vm", help="VMs of the configured vCenters")
    vm_acts = vm.add_subparsers(dest="vm_command", required=True, metavar="ACTION")
    vm_ls = vm_acts.add_parser("ls", help="every VM, with its disks and whether a job protects it")
    vm_ls.add_argument("--vcenter", help="only this vCenter")

    run = sub.add_parser("run", help="runs: list, watch live progress")
    run_acts = run.add_subparsers(dest="run_command", required=True, metavar="ACTION")
    listing = run_acts.add_parser("list", help="newest runs first")
    listing.add_argument("--job", help="only runs of this job (id or name)")
    listing.add_argument("--limit", type=int, default=20)
    w = run_acts.add_parser("watch", help="progress bars until the run ends; exit 0 if it succeeded")
    w.add_argument("run_id")
    run_acts.add_parser("cancel", help="stop a run (its snapshots are removed)").add_argument("run_id")
    log = run_acts.add_parser("log", help="what happened to a run, in words")
    log.add_argument("run_id")
    log.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until it ends")

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


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point for the four command groups; returns the exit code."""
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        return _dispatch(args, settings, sessions)
    except (StoreError, apikeys.ApiKeyError, ValueError) as exc:
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
    if args.command == "vm":
        return _vm_ls(args, settings, sessions)
    if args.command == "job":
        if action == "create":
            return _job_create(args, settings, sessions)
        if action == "list":
            return _job_list(sessions)
        if action in ("edit", "enable", "disable"):
            return _job_edit(args, settings, sessions)
        if action == "preview":
            return _job_preview(args, settings, sessions)
        if action == "show":
            with sessions() as s:
                print(json.dumps(jobstore.job_view(jobstore.find_job(s, args.job)), indent=2))
            return 0
        if action == "cancel":
            with sessions.begin() as s:
                runs = jobstore.cancel_job_runs(s, jobstore.find_job(s, args.job).id)
            print(f"cancel requested for {len(runs)} run(s): {', '.join(runs) or 'none running'}")
            return 0
        if action == "delete":
            return _job_delete(args, sessions)
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
        if action == "log":
            return run_log(sessions, args.run_id, args.follow)
        if action == "cancel":
            with sessions.begin() as s:
                jobstore.cancel_run(s, args.run_id)
            print(f"cancel requested for run {args.run_id}; its movers stop within a second")
            return 0
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
            raise Invalid("vcenter", "give --vcenter (configured: " + _vcenter_names(settings) + ")")
        vcenter = settings.vcenters[0].name
    body: dict[str, Any] = {
        "name": args.name,
        "vcenter": vcenter,
        "vms": [jobspec.vm_ref(v) for v in args.vm],
        "options": {},
        "repository": "",
        "enabled": not args.disabled,
    }
    jobspec.apply_spec_args(body, args)
    if args.restore_test:
        if not args.test_network:
            raise Invalid("test-network", "a restore-test job needs --test-network (an isolated network)")
        body["options"]["restore_test"] = {"datastore": args.restore_test, "network": args.test_network}
    spec = jobstore.check_spec(sessions, JobSpec.model_validate(body), settings)
    with sessions.begin() as s:
        job = jobstore.create_job(s, spec, utcnow(), settings.repository_location)
        view = jobstore.job_view(job)
    vms = ", ".join(f"{v['name']} ({v['moref']})" for v in view["vms"])
    print(f"created job {view['id']} {view['name']!r}: {vms}; repository {view['repository']}")
    return 0


def _job_edit(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """edit, enable, disable: the job's spec as it is, changed where the command line says; then
    the same checks and store function as `PUT /api/v1/jobs/{id}`."""
    with sessions() as s:
        view = jobstore.job_view(jobstore.find_job(s, args.job))
    kept = (
        "name",
        "vcenter",
        "schedule",
        "options",
        "repository",
        "retention",
        "enabled",
        "select",
        "exclude",
    )
    body = {k: view[k] for k in kept}
    if args.job_command == "edit":
        body["vms"] = jobspec.edited_vms(view["vms"], args)
        jobspec.apply_spec_args(body, args)
        if args.new_name:
            body["name"] = args.new_name
    else:
        body["vms"] = [{"moref": v["moref"]} for v in view["vms"]]
        body["enabled"] = args.job_command == "enable"
    spec = jobstore.check_spec(sessions, JobSpec.model_validate(body), settings, view["id"])
    with sessions.begin() as s:
        job = jobstore.replace_job(s, view["id"], spec, utcnow(), settings.repository_location)
        after = jobstore.job_view(job)
    state = "enabled" if after["enabled"] else "disabled"
    print(f"job {after['id']} {after['name']!r} saved ({state}, {len(after['vms'])} VMs)")
    return 0


def _job_delete(args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        view = jobstore.job_view(jobstore.find_job(s, args.job))
    if not args.yes:
        if not sys.stdin.isatty():
            raise Invalid("yes", f"deleting job {view['name']!r} needs --yes (no terminal to ask)")
        answer = input(f"delete job {view['name']!r} ({view['id']})? its restore points stay [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    with sessions.begin() as s:
        gone = jobstore.delete_job(s, view["id"], force=args.force)
    print(f"deleted job {view['id']} {view['name']!r}" + (f"; cancelled {', '.join(gone)}" if gone else ""))
    return 0


def _job_preview(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    from shared.vsphere import selection

    with sessions() as s:
        chosen = selection.of_job(jobstore.find_job(s, args.job))
    found = jobstore.preview(settings, chosen)
    if getattr(args, "json", False):
        print(json.dumps(found, indent=2))
        return 0
    print(f"{'vcenter':<12} {'vm':<32} {'moref':<10} {'host':<14} chosen by")
    for vm in found["vms"]:
        host = (vm["host"] or "-")[:14]
        name = vm["name"][:32]
        print(f"{vm['vcenter'][:12]:<12} {name:<32} {vm['moref']:<10} {host:<14} {vm['chosen_by']}")
        for disk in vm["skipped_disks"]:
            print(f"{'':<12}   disk {disk['key']} ({disk['label']}) skipped: {disk['reason']}")
    for down in found["unreachable"]:
        print(f"vbm job preview: vCenter {down['vcenter']} cannot be read: {down['error']}", file=sys.stderr)
    print(f"{found['total']} VM(s)", file=sys.stderr)
    return 1 if found["unreachable"] else 0


def _vm_ls(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """Every VM, asked of vCenter now; a vCenter that does not answer is named (exit 1)."""
    vcenters = [jobstore.vcenter_of(settings, args.vcenter)] if args.vcenter else list(settings.vcenters)
    if not vcenters:
        raise Invalid("vcenter", "no vCenter is configured (set VBM_VCENTERS, or run vbm up's lab)")
    with sessions() as s:
        protected = {(j.vcenter, v["moref"]) for j in jobstore.list_jobs(s) for v in j.vms}
    print(f"{'vcenter':<12} {'vm':<32} {'moref':<10} {'power':<11} {'disks':>5} {'size':>10}  cbt  protected")
    failed = 0
    for vc in vcenters:
        try:
            listed = jobstore.list_vms(vc)
        except Unreachable as exc:
            print(f"vbm vm ls: {exc}", file=sys.stderr)
            failed += 1
            continue
        for vm in sorted(listed, key=lambda v: v.name):
            size = human_bytes(sum(d.capacity for d in vm.disks))
            yes = "yes" if (vc.name, vm.moref) in protected else "no"
            cbt = "on " if vm.cbt_enabled else "off"
            print(
                f"{vc.name[:12]:<12} {vm.name[:32]:<32} {vm.moref:<10} {vm.power_state[:11]:<11}"
                f" {len(vm.disks):>5} {size:>10}  {cbt}  {yes}"
            )
    return 1 if failed else 0


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
            f"{k.name[:24]:<24} {k.id:<16} {when(iso(k.created_at)):<21}"
            f" {when(iso(k.last_used_at)):<21} {when(iso(k.revoked_at))}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m shared.cli.jobs ...`: these commands without the rest of `vbm`."""
    from shared.db.existing import NoDatabase
    from shared.settings import ConfigError, load_settings

    parser = argparse.ArgumentParser(prog="vbm")
    add_parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return run(args, settings)
    except (ConfigError, NoDatabase) as exc:
        print(f"vbm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
