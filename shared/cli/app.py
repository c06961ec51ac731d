"""`vbm`: the one command for people.

vbm up                 every service in one supervised process tree (and NATS, and the lab)
vbm lab ...            the vCenter simulator on its own, for demos
vbm db upgrade|status  the database schema
vbm config             the effective settings, secrets masked
vbm config-backup|config-restore   vbm's own database and keys, in one encrypted file
vbm status             the services on the bus, by their heartbeats
vbm logs               the logs of `vbm up`'s services (--run ID, --follow)
vbm version
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shared import __version__
from shared.cli import alerts as cli_alerts
from shared.cli import audit as cli_audit
from shared.cli import channel as cli_channel
from shared.cli import confbackup as cli_confbackup
from shared.cli import events as cli_events
from shared.cli import jobs as cli_jobs
from shared.cli import location as cli_location
from shared.cli import logs as cli_logs
from shared.cli import mount as cli_mount
from shared.cli import prune as cli_prune
from shared.cli import repo as cli_repo
from shared.cli import restore as cli_restore
from shared.cli import secrets as cli_secrets
from shared.cli import status as cli_status
from shared.cli import trail
from shared.cli import vcenter as cli_vcenter
from shared.db.existing import NoDatabase, open_existing
from shared.runtime.status import about
from shared.settings import ConfigError, Settings, load_settings, unknown_variables


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vbm", description="vSphere Backup Manager: backups of VMware vSphere VMs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run every service (and NATS and the lab when needed)")
    up.add_argument("--no-lab", action="store_true", help="never start the lab simulator")
    up.add_argument(
        "--lab-spec", type=Path, metavar="FILE", help="the lab to start (a spec file, docs/lab.md; lab.spec)"
    )

    sub.add_parser("lab", help="run the vCenter simulator on its own (see `vbm lab --help`)", add_help=False)

    db = sub.add_parser("db", help="the database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="bring the schema to the newest revision")
    db_sub.add_parser("status", help="show the schema revision")

    cli_repo.add_parser(sub)
    cli_jobs.add_parsers(sub)
    cli_restore.add_parser(sub)
    cli_restore.add_report_parser(sub)
    cli_prune.add_parsers(sub)
    cli_alerts.add_parsers(sub)
    cli_vcenter.add_parsers(sub)
    cli_location.add_parsers(sub)
    cli_mount.add_parsers(sub)
    cli_channel.add_parsers(sub)
    cli_secrets.add_parsers(sub)
    cli_confbackup.add_parsers(sub)
    cli_audit.add_parsers(sub)
    cli_events.add_parsers(sub)
    cli_status.add_parsers(sub)
    cli_logs.add_parsers(sub)

    sub.add_parser("config", help="print the effective settings (secrets masked)")
    version = sub.add_parser("version", help="print the version")
    version.add_argument("--json", action="store_true", help="what GET /api/v1 answers, as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    old = os.umask(0o077)  # repositories, exports, keys made from the command line are private too
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`vbm audit ls | head`): end quietly as a Unix tool does, not with
        # a traceback; stdout is pointed at /dev/null so that the interpreter's last flush is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    finally:
        os.umask(old)


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["lab"]:
        from lab.__main__ import main as lab_main

        return lab_main(args_list[1:])
    args = _parser().parse_args(args_list)
    if args.command == "version":
        print(json.dumps(about(), indent=2) if args.json else f"vbm {__version__}")
        return 0
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"vbm: {exc}", file=sys.stderr)
        return 2
    for name in unknown_variables():
        print(f"vbm: warning: {name} configures nothing (a typo?)", file=sys.stderr)
    if args.command == "config":
        print(json.dumps(settings.public_dict(), indent=2, default=str))
        return 0
    try:
        code = _run(args, settings)
    except NoDatabase as exc:
        print(f"vbm {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # what it did is done; only its output was cut by the reader
        trail.record(args, settings.db_url, 0)
        raise
    except BaseException as exc:
        trail.record(args, settings.db_url, 1, type(exc).__name__)
        raise
    trail.record(args, settings.db_url, code)
    return code


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "db":
        return _db(args.db_command, settings)
    if args.command in cli_jobs.COMMANDS:
        return cli_jobs.run(args, settings)
    if args.command == "restore":
        return cli_restore.run(args, settings)
    if args.command in cli_alerts.COMMANDS:
        return cli_alerts.run(args, settings)
    if args.command in cli_vcenter.COMMANDS:
        return cli_vcenter.run(args, settings)
    if args.command in cli_location.COMMANDS:
        return cli_location.run(args, settings)
    if args.command in cli_mount.COMMANDS:
        return cli_mount.run(args, settings)
    if args.command in cli_channel.COMMANDS:
        return cli_channel.run(args, settings)
    if args.command in cli_secrets.COMMANDS:
        return cli_secrets.run(args, settings)
    if args.command in cli_audit.COMMANDS:
        return cli_audit.run(args, settings)
    if args.command in cli_events.COMMANDS:
        return cli_events.run(args, settings)
    if args.command in cli_status.COMMANDS:
        return cli_status.run(args, settings)
    if args.command in cli_logs.COMMANDS:
        return cli_logs.run(args, settings)
    if args.command in ("prune", "gc"):
        return cli_prune.run(args, settings)
    if args.command in cli_confbackup.COMMANDS:
        return cli_confbackup.run(args, settings)
    if args.command == "report":
        return cli_restore.run_report(args, settings)
    if args.command == "repo":
        return cli_repo.run(args, settings.repository_location, cli_location.credentials(settings))
    if args.command == "up":
        from shared.runtime.service import setup_logging
        from shared.runtime.supervisor import run_up

        setup_logging(settings.log_level, "vbm-up")
        return run_up(settings, with_lab=not args.no_lab, lab_spec=args.lab_spec)
    raise AssertionError(args.command)


def _db(action: str, settings: Settings) -> int:
    """`upgrade` creates the database if need be (as `vbm up` does); `status` only looks."""
    from shared.db import current_revision, head_revision, make_engine, upgrade

    if action == "upgrade":
        engine = make_engine(settings.db_url)
    else:
        engine = open_existing(settings.db_url, settings.data_dir, migrate=False)
    try:
        if action == "upgrade":
            upgrade(engine)
        have, want = current_revision(engine), head_revision()
        safe_url = engine.url.render_as_string(hide_password=True)
        print(f"database {safe_url}: revision {have or 'none'} (newest {want})")
        return 0 if have == want else 1
    finally:
        engine.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
