"""`vbm job|run|backups|apikey|vm ...`: jobs, runs, the catalog, API keys and VMs.

job create --name N --vcenter V --vm NAME_OR_MOREF... [--schedule S] [--keep-daily N ...] [--preview]
job list | show J | preview J | run J [--idempotency-key K] | cancel J | edit J [...]
job enable J | disable J | delete J [--force]
(each takes --json: the same JSON the REST API answers, and nothing else on stdout)
run list [--job J] | run watch RUN_ID | run cancel RUN_ID
backups ls [--vm VM] [--job J] | backups copies [--state S] [--restore-point ID] | backups manifest ID
apikey create NAME | list | revoke NAME
vm ls [--vcenter V]

The same functions as the REST API (shared.catalog.jobs, shared.catalog.runs, shared.catalog.apikeys).
The `job` group is here; `run`, `backups`/`verify`, `vm` and `apikey` have their own modules
(shared.cli.runs, .backups, .vm, .apikey), brought together by `add_parsers` and `run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import apikeys, idempotency, vcenters
from shared.catalog import jobs as jobstore
from shared.catalog.runs import run_view
from shared.cli import apikey as cli_apikey
from shared.cli import backups as cli_backups
from shared.cli import jobpreview, jobspec
from shared.cli import runs as cli_runs
from shared.cli import user as cli_user
from shared.cli import vm as cli_vm
from shared.cli.once import once
from shared.clock import utcnow
from shared.errors import Invalid, StoreError
from shared.model.jobs import JobSpec
from shared.model.selection import Selector
from shared.settings import Settings

COMMANDS = ("job", "run", "backups", "verify", "apikey", "vm", "user")
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
    create.add_argument(
        "--preview", action="store_true", help="save nothing: the VMs the job would hold today, and why each"
    )
    create.add_argument("--json", action="store_true", help="the job (or the preview) as JSON")
    acts.add_parser("list", help="list jobs").add_argument("--json", action="store_true", help="as JSON")
    for name, text in (
        ("show", "one job as JSON"),
        ("preview", "the VMs the job holds today (its selectors resolved now), and why each"),
        ("cancel", "stop the job's running runs (snapshots are removed)"),
        ("enable", "scheduled runs happen again"),
        ("disable", "no scheduled runs (run it by hand still works)"),
    ):
        one = acts.add_parser(name, help=text)
        one.add_argument("job", metavar="NAME_OR_ID")
        one.add_argument("--json", action="store_true", help="the answer as JSON (as the REST API's)")
    run_now = acts.add_parser("run", help="run a job now (refused while a run of it is in progress)")
    run_now.add_argument("job", metavar="NAME_OR_ID")
    run_now.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="run at most once for KEY (24 h): a retry with it prints the first run again",
    )
    run_now.add_argument("--json", action="store_true", help="the run as JSON")
    edit = acts.add_parser("edit", help="change a job: only what the options name")
    edit.add_argument("job", metavar="NAME_OR_ID")
    jobspec.add_spec_args(edit, editing=True)
    edit.add_argument("--json", action="store_true", help="the saved job as JSON")
    delete = acts.add_parser("delete", help="delete a job (its restore points stay)")
    delete.add_argument("job", metavar="NAME_OR_ID")
    delete.add_argument("--force", action="store_true", help="even while it runs (the run is cancelled)")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    delete.add_argument("--json", action="store_true", help="what was deleted and cancelled, as JSON")

    cli_vm.add_parsers(sub)
    cli_runs.add_parsers(sub)
    cli_backups.add_parsers(sub)
    cli_apikey.add_parsers(sub)
    cli_user.add_parsers(sub)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Entry point for the four command groups; returns the exit code."""
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        with sessions() as s:
            settings = vcenters.effective(s, settings)  # those added through the API too
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
        return cli_vm.vm_ls(args, settings, sessions)
    if args.command == "job":
        if action == "create":
            return _job_create(args, settings, sessions)
        if action == "list":
            return _job_list(sessions, args.json)
        if action in ("edit", "enable", "disable"):
            return _job_edit(args, settings, sessions)
        if action == "preview":
            return jobpreview.job_preview(args, settings, sessions)
        if action == "show":
            with sessions() as s:
                print(json.dumps(jobstore.job_view(jobstore.find_job(s, args.job)), indent=2))
            return 0
        if action == "cancel":
            with sessions.begin() as s:
                job_id = jobstore.find_job(s, args.job).id
                runs = jobstore.cancel_job_runs(s, job_id)
            if args.json:
                print(json.dumps({"job_id": job_id, "cancelled_runs": runs}, indent=2))
            else:
                print(f"cancel requested for {len(runs)} run(s): {', '.join(runs) or 'none running'}")
            return 0
        if action == "delete":
            return _job_delete(args, sessions)
        return _job_run(args, sessions)
    if args.command == "run":
        return cli_runs.dispatch(args, sessions)
    if args.command in ("backups", "verify"):
        return cli_backups.dispatch(args, sessions, settings)
    if args.command == "user":
        return cli_user.dispatch(str(action), args, settings, sessions)
    return cli_apikey.dispatch(str(action), args, sessions)


def _job_run(args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
    """`vbm job run J [--idempotency-key K]`: the same function as `POST .../run` (409 there,
    an error here, while a run of the job is in progress); a key as the API keeps it, for the
    caller `os:<user>` on the route `vbm job run J`."""

    def start(s: Session) -> idempotency.Answer:
        run = run_view(jobstore.run_now(s, jobstore.find_job(s, args.job), "manual", utcnow()))
        return idempotency.Answer(202, {"run_id": run["id"], "run": run})

    answer = once(sessions, args.idempotency_key, f"vbm job run {args.job}", b"", start)
    run_id = answer.body["run_id"]
    if args.json:
        print(json.dumps(answer.body, indent=2))  # as POST .../run answers it (replayed: on stderr)
    else:
        print(run_id)
    again = " (the run this key started before)" if answer.replayed else ""
    print(
        f"run of {args.job} requested{again}; a running vbm publishes it within a second."
        f" Follow it with: vbm run watch {run_id}",
        file=sys.stderr,
    )
    return 0


def _job_create(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """`vbm job create`, or with --preview what `POST /api/v1/jobs/preview` answers for that body."""
    body = _create_body(args, settings)
    if args.preview:
        return jobpreview.show(jobstore.preview_spec(settings, JobSpec.model_validate(body)), args.json)
    spec = jobstore.check_spec(sessions, JobSpec.model_validate(body), settings)
    with sessions.begin() as s:
        job = jobstore.create_job(s, spec, utcnow(), settings.repository_location)
        view = jobstore.job_view(job)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print(f"created job {view['id']} {view['name']!r}: {_holds(view)}; repository {view['repository']}")
    return 0


def _create_body(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The job body (as POST /api/v1/jobs takes it) the command line of `job create` says."""
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
    return body


def _holds(view: dict[str, Any]) -> str:
    """What a job holds, as its summary says it: its VMs, then its selectors ('name batch-*')."""
    held = [f"{v['name']} ({v['moref']})" for v in view["vms"]]
    for raw in view["select"]:
        kind, value = Selector.model_validate(raw).criterion
        where = f" on {raw['vcenter']}" if raw.get("vcenter") else ""
        held.append(f"{'pool' if kind == 'resource_pool' else kind} {value}{where}")
    return ", ".join(held)


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
        body["vms"] = [jobspec.kept_ref(v) for v in view["vms"]]
        body["enabled"] = args.job_command == "enable"
    spec = jobstore.check_spec(sessions, JobSpec.model_validate(body), settings, view["id"])
    with sessions.begin() as s:  # only the version read above: a change made since is not undone
        job = jobstore.replace_job(s, view["id"], spec, utcnow(), settings.repository_location, view["etag"])
        after = jobstore.job_view(job)
    if getattr(args, "json", False):
        print(json.dumps(after, indent=2))
        return 0
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
    if args.json:
        print(json.dumps({"deleted": view["id"], "cancelled_runs": gone}, indent=2))
    else:
        print(
            f"deleted job {view['id']} {view['name']!r}" + (f"; cancelled {', '.join(gone)}" if gone else "")
        )
    return 0


def _vcenter_names(settings: Settings) -> str:
    return ", ".join(vc.name for vc in settings.vcenters) or "none; set VBM_VCENTERS or vbm vcenter add"


def _schedule_text(schedule: dict[str, Any] | None) -> str:
    if not schedule:
        return "manual"
    if schedule["kind"] == "cron":
        return f"cron {schedule['cron']}"
    if schedule["kind"] == "interval":
        return f"every {schedule['every_minutes']} min"
    return f"{schedule['preset']}@{schedule.get('at', '02:00')}"


def _job_list(sessions: sessionmaker[Session], as_json: bool = False) -> int:
    with sessions() as s:
        jobs = [jobstore.job_view(j) for j in jobstore.list_jobs(s)]
    if as_json:
        print(json.dumps({"jobs": jobs, "total": len(jobs)}, indent=2))
        return 0
    print(f"{'id':<14} {'name':<24} {'vcenter':<10} {'vms':>3}  {'schedule':<20} enabled")
    for j in jobs:
        sched = _schedule_text(j["schedule"])
        name, vcenter = j["name"][:24], j["vcenter"][:10]
        print(f"{j['id']:<14} {name:<24} {vcenter:<10} {len(j['vms']):>3}  {sched:<20} {j['enabled']}")
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
