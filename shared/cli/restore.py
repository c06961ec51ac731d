"""`vbm restore`: restore a restore point as a new VM, list, show, follow and cancel restores;
`vbm report`: the signed reports of restore tests.

The request is written to the database (with its event, through the outbox) as the REST API
does; a running vbm (the mover) carries it out. With --json, each command prints what its REST
API operation answers (the same views), and nothing else on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import idempotency, restores, vcenters
from shared.catalog.listing import Window
from shared.cli import audit as cli_audit
from shared.cli.once import once
from shared.clock import utcnow
from shared.errors import NotFound, StoreError
from shared.settings import Settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("restore", help="restore a restore point as a new VM; list, show, watch, cancel")
    acts = p.add_subparsers(dest="restore_command", required=True, metavar="ACTION")
    start = acts.add_parser("start", help="restore as a new VM (left powered off unless --power-on)")
    start.add_argument("restore_point", metavar="RESTORE_POINT_ID")
    start.add_argument("--name", help="the new VM's name (must not exist)")
    start.add_argument("--datastore", help="where the new VM goes")
    start.add_argument("--in-place", action="store_true", help="over the original VM (powers it off)")
    start.add_argument("--yes", action="store_true", help="confirm an in-place restore")
    start.add_argument(
        "--method",
        choices=("full", "fast"),
        default="full",
        help="in place: full writes every disk whole; fast writes only the windows that differ"
        " (hot-add through vcenters[].hotadd_proxy, CBT since the restore point)",
    )
    start.add_argument(
        "--instant", action="store_true", help="instant recovery: run the VM from the backup store"
    )
    start.add_argument(
        "--test",
        action="store_true",
        help="a restore test: a temporary VM on --network, checked, removed, reported",
    )
    start.add_argument("--vcenter", help="default: the one the VM was backed up from")
    start.add_argument("--datacenter", help="default: the original VM's, else the only one")
    start.add_argument("--folder", help="VM folder path in the datacenter, e.g. restores/2026")
    start.add_argument("--pool", dest="resource_pool", help="host, cluster or resource pool name")
    start.add_argument("--network", help="connect every NIC to this network")
    start.add_argument("--power-on", action="store_true")
    start.add_argument(
        "--disk-format",
        choices=("as_source", "thin", "thick"),
        help="new VM, test: as_source (default: each disk as backed up), thin (only the data"
        " written) or thick (the whole capacity written)",
    )
    start.add_argument("--allow-unverified", action="store_true", help="even if its verification failed")
    start.add_argument("--wait", action="store_true", help="follow it to the end; exit 0 if it succeeded")
    start.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="start at most once for KEY (24 h): a retry with it prints the restore it started before",
    )
    start.add_argument("--json", action="store_true", help="the restore as JSON (with --wait: once ended)")
    listing = acts.add_parser("list", help="newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true", help="the page as GET /api/v1/restores answers it")
    for name, text in (
        ("show", "one restore, as JSON"),
        ("watch", "follow to the end"),
        ("cancel", "stop it"),
        ("stop", "stop an instant VM: power off, remove, unmount"),
    ):
        one = acts.add_parser(name, help=text)
        one.add_argument("restore_id")
        if name != "watch":
            one.add_argument("--json", action="store_true", help="the restore as JSON")
    mig = acts.add_parser("migrate", help="move an instant VM to a production datastore, then unmount")
    mig.add_argument("restore_id")
    mig.add_argument("--datastore", required=True)
    mig.add_argument("--json", action="store_true", help="the restore as JSON")


def _mode(args: argparse.Namespace) -> Literal["new_vm", "in_place", "test", "instant"]:
    if args.in_place:
        return "in_place"
    if args.test:
        return "test"
    return "instant" if args.instant else "new_vm"


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="signed restore-test reports: list, show, public-key, verify")
    acts = p.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    listing = acts.add_parser("list", help="newest first")
    listing.add_argument("--vm")
    show = acts.add_parser("show", help="the signed report as JSON (give this to an auditor)")
    show.add_argument("report_id")
    key = acts.add_parser("public-key", help="the PEM public key that verifies the reports")
    for one in (listing, show, key):
        one.add_argument("--json", action="store_true", help="as the REST API answers it")
    v = acts.add_parser("verify", help="check a signed report file; exit 0 if it is genuine")
    v.add_argument("file")
    v.add_argument("--key", help="PEM public key file (default: this server's)")


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    from shared.catalog import reports
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    action = args.report_command
    if action == "public-key":
        key = reports.signing_key(settings.data_dir)
        if args.json:
            print(json.dumps(reports.public_key_view(key), indent=2))
        else:
            print(reports.public_pem(key), end="")
        return 0
    if action == "verify":
        try:
            signed = json.loads(Path(args.file).read_text(encoding="utf-8"))
            if args.key:
                pem = Path(args.key).read_text()
            else:
                pem = reports.public_pem(reports.signing_key(settings.data_dir))
            report = reports.verify(signed, pem)
        except (OSError, ValueError, reports.ReportError) as exc:
            print(f"vbm report verify: NOT GENUINE or unreadable: {exc}", file=sys.stderr)
            return 1
        print(f"genuine: restore test {report.get('restore_id')} of {report['restore_point']['vm_name']}"
              f" ({report['restore_point']['id']}): {report.get('result')}")  # fmt: skip
        return 0
    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        with make_sessionmaker(engine)() as s:
            if action == "show":  # as stored and as the API answers it: --json or not
                try:
                    print(reports.signed_report(s, args.report_id))
                except NotFound as exc:
                    print(f"vbm report: {exc}", file=sys.stderr)
                    return 1
                return 0
            if args.json:
                print(
                    json.dumps(
                        {"reports": [reports.report_view(r) for r in reports.list_reports(s, args.vm)]},
                        indent=2,
                    )
                )
                return 0
            for r in reports.list_reports(s, args.vm, limit=None):
                verdict = "passed" if r.ok else "FAILED"
                print(f"{r.id}  {verdict}  {r.vm_name}  {r.restore_point_id}  {r.created_at}")
        return 0
    finally:
        engine.dispose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        with sessions() as s:
            settings = vcenters.effective(s, settings)  # those added through the API too
        return _dispatch(args, settings, sessions)
    except StoreError as exc:
        print(f"vbm restore: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        err = exc.errors()[0]
        print(f"vbm restore: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"vbm restore: cannot use the database: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        engine.dispose()


def _dispatch(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    action = args.restore_command
    if action == "start":
        return _start(args, settings, sessions)
    if action == "list":
        window = Window.parse({"limit": str(args.limit)})
        with sessions() as s:
            found = restores.list_restores(s, window)
            if args.json:
                print(
                    json.dumps(
                        found.answer("restores", [restores.restore_view(r) for r in found.rows], window),
                        indent=2,
                    )
                )
                return 0
            for r in found.rows:
                target = r.target
                print(
                    f"{r.id}  {r.state:<9} {r.phase:<11} {r.restore_point_id} -> {target.get('name')}"
                    f" on [{target.get('datastore')}]  {r.error or ''}".rstrip()
                )
        return 0
    if action == "show":  # JSON, --json or not
        with sessions() as s:
            print(json.dumps(restores.restore_view(restores.get_restore(s, args.restore_id)), indent=2))
        return 0
    if action == "watch":
        return watch(sessions, args.restore_id)
    with sessions.begin() as s:
        if action in ("migrate", "stop"):
            datastore = getattr(args, "datastore", None)
            row = restores.instant_action(s, args.restore_id, action, datastore, utcnow())
        else:
            row = restores.cancel_restore(s, args.restore_id)
        view = restores.restore_view(row)
    if args.json:
        print(json.dumps(view, indent=2))
    elif action in ("migrate", "stop"):
        print(f"{action} of {args.restore_id} requested; follow it with: vbm restore show {args.restore_id}")
    else:
        print(
            f"cancel of {args.restore_id} requested; the mover stops and removes what it made",
            file=sys.stderr,
        )
    return 0


def _start(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """`vbm restore start`: the same function as POST /api/v1/restores; with --idempotency-key,
    at most once per key, kept as the API keeps it (shared/catalog/idempotency.py) for the caller
    `os:<user>` on the route `vbm restore start RP`, the request's JSON as its body."""
    body = restores.RestoreRequest(
        restore_point_id=args.restore_point,
        mode=_mode(args),
        confirm=args.yes,
        method=args.method,
        name=args.name,
        datastore=args.datastore,
        vcenter=args.vcenter,
        datacenter=args.datacenter,
        folder=args.folder,
        resource_pool=args.resource_pool,
        network=args.network,
        power_on=args.power_on,
        disk_format=args.disk_format,
        allow_unverified=args.allow_unverified,
    )

    def start(s: Session) -> idempotency.Answer:
        row = restores.request_restore(s, body, settings, utcnow(), by=cli_audit.actor())
        view = restores.restore_view(row)
        return idempotency.Answer(202, view, f"/api/v1/restores/{view['id']}")

    route = f"vbm restore start {args.restore_point}"
    answer = once(sessions, args.idempotency_key, route, body.model_dump_json().encode(), start)
    restore_id = answer.body["id"]
    again = " (the restore this key started before)" if answer.replayed else ""
    if args.json and not args.wait:
        print(json.dumps(answer.body, indent=2))
    elif not args.json:
        print(restore_id)
    if not args.wait:
        print(f"restore requested{again}; follow it with: vbm restore watch {restore_id}", file=sys.stderr)
        return 0
    if not args.json:
        return watch(sessions, restore_id)
    code = watch(sessions, restore_id, out=sys.stderr)
    with sessions() as s:
        print(json.dumps(restores.restore_view(restores.get_restore(s, restore_id)), indent=2))
    return code


def watch(
    sessions: sessionmaker[Session], restore_id: str, interval: float = 0.5, out: TextIO | None = None
) -> int:
    """One status line on `out` (stdout), refreshed, until the restore ends; exit 0 if it succeeded."""
    out = out or sys.stdout
    tty = out.isatty()
    last = ""
    while True:
        with sessions() as s:
            view = restores.restore_view(restores.get_restore(s, restore_id))
        pct = 100 * view["bytes_done"] / view["bytes_total"] if view["bytes_total"] else 0.0
        eta = f" ETA {view['eta_s']:.0f}s" if view["eta_s"] else ""
        line = (
            f"{restore_id} {view['state']} {view['phase']} {pct:5.1f}%"
            f" {view['bytes_done'] >> 20}/{view['bytes_total'] >> 20} MiB"
            f" {view['rate'] / (1 << 20):.0f} MiB/s{eta}"
        )
        if line != last:
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True, file=out)
            last = line
        if view["state"] in restores.FINAL:
            if tty:
                print(file=out)
            if view["state"] == "succeeded":
                print(f"VM {view['target'].get('name')} is {view['vm_moref']}", file=out)
                return 0
            print(f"{view['state']}: {view['error']}", file=sys.stderr)
            return 1
        time.sleep(interval)
