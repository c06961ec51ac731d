"""`vbm vcenter add|list|show|edit|test|rm`: vCenters added beside the configured ones, on the
database directly (as the API does: shared/catalog/vcenters.py). A vCenter is tested before it is
saved (DNS, TCP, TLS, the vSphere API, the login) unless `--skip-test`; its password is read from
stdin (`--password-stdin`) or asked for without echo, and stored encrypted. With `--json` each
prints what the REST API answers (/api/v1/vcenters)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import vcenters as vcstore
from shared.cli.say import fields, listing, plain_actions, say
from shared.clock import utcnow
from shared.db import make_sessionmaker
from shared.db.existing import open_existing
from shared.errors import NotFound, StoreError
from shared.settings import Settings, VCenterSettings

if TYPE_CHECKING:
    from shared.vsphere.probe import Probe

COMMANDS = ("vcenter",)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "vcenter", help="vCenters: add, list, show, edit, test, remove (beside the configured ones)"
    )
    acts = p.add_subparsers(dest="vcenter_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", help="add a vCenter (its connection is tested first)")
    add.add_argument("name")
    add.add_argument("--url", required=True, help="the SDK endpoint, e.g. https://vcsa.example.com/sdk")
    add.add_argument("--username", required=True)
    _fields(add, "do not check vCenter's certificate")
    edit = acts.add_parser("edit", help="change an added vCenter (what is given; tested first)")
    edit.add_argument("name")
    edit.add_argument("--url", help="the SDK endpoint")
    edit.add_argument("--username")
    _fields(edit, "do not check vCenter's certificate (--verify-tls: check it again)")
    edit.add_argument("--verify-tls", action="store_true", help="check vCenter's certificate again")
    plain_actions(
        acts,
        {
            "list": "every vCenter, configured (source env) and added (source api)",
            "show": "one vCenter (never its password)",
            "test": "test a vCenter's connection: says which step failed",
            "rm": "remove an added vCenter (refused while a job uses it)",
        },
    )


def _fields(parser: argparse.ArgumentParser, no_verify: str) -> None:
    parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    parser.add_argument("--no-verify-tls", action="store_true", help=no_verify)
    parser.add_argument("--ca-file", metavar="FILE", help="PEM of the CA that signed vCenter's certificate")
    parser.add_argument("--hotadd-proxy", metavar="VM", help="the VM vbm runs in (fast in-place restores)")
    parser.add_argument("--skip-test", action="store_true", help="save without testing the connection")
    parser.add_argument("--json", action="store_true", help="the vCenter and its test as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        action = {"add": _add, "edit": _edit, "list": _list, "show": _show, "test": _test, "rm": _rm}[
            args.vcenter_command
        ]
        return action(args, settings, sessions)
    except StoreError as exc:
        print(f"vbm vcenter {args.vcenter_command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        engine.dispose()


def _probe(vc: VCenterSettings) -> Probe:
    from shared.vsphere.probe import probe  # pyVmomi: only for the commands that talk to vCenter

    return probe(vc)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass(f"password of {args.username} on {args.name}: ")


def _add(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    body = {
        "name": args.name,
        "url": args.url,
        "username": args.username,
        "password": _password(args),
        "verify_tls": not args.no_verify_tls,
        "ca_file": args.ca_file,
        "hotadd_proxy": args.hotadd_proxy,
    }
    with sessions() as s:
        vc = vcstore.candidate_new(s, settings, body)
    tested = _tested(args, vc)
    if tested is False:
        return 1
    with sessions.begin() as s:
        vcstore.candidate_new(s, settings, body)
        view = vcstore.row_view(vcstore.save(s, settings, vc, utcnow()))
    say(args, vcstore.saved_view(view, tested), f"vCenter {vc.name} added ({vc.url})")
    return 0


def _edit(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """As PUT /api/v1/vcenters/NAME: what is given changes, the rest (the password too) stays."""
    body: dict[str, Any] = {
        k: v
        for k, v in (
            ("url", args.url),
            ("username", args.username),
            ("ca_file", args.ca_file),
            ("hotadd_proxy", args.hotadd_proxy),
        )
        if v is not None
    }
    if args.no_verify_tls or args.verify_tls:
        body["verify_tls"] = args.verify_tls
    if args.password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\r\n")
    with sessions() as s:
        vc = vcstore.candidate_change(s, settings, args.name, body)
    tested = _tested(args, vc)
    if tested is False:
        return 1
    with sessions.begin() as s:
        view = vcstore.row_view(vcstore.save(s, settings, vc, utcnow()))
    say(args, vcstore.saved_view(view, tested), f"vCenter {vc.name} changed ({vc.url})")
    return 0


def _tested(args: argparse.Namespace, vc: VCenterSettings) -> dict[str, object] | Literal[False] | None:
    """The connection test's view (None: skipped), or False when it failed (said on stderr)."""
    if args.skip_test:
        if not args.json:
            print(f"vCenter {vc.name}: saved without a connection test (--skip-test)")
        return None
    result = _probe(vc)
    if not result.ok:
        print(
            f"vbm vcenter {args.vcenter_command}: connection test failed ({result.kind}): {result.message}",
            file=sys.stderr,
        )
        print("nothing was saved (--skip-test saves it anyway)", file=sys.stderr)
        return False
    if not args.json:
        print(result.message)
    return result.view()


def _show(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        view = vcstore.get_view(s, settings, args.name)
    say(args, view, fields(view))
    return 1 if view.get("error") else 0


def _list(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        views = vcstore.list_views(s, settings)
    if args.json:
        say(args, listing("vcenters", views), "")
        return 0
    if not views:
        print("no vCenters (vbm vcenter add NAME --url URL --username USER, or VBM_VCENTERS)")
    for v in views:
        tls = "tls checked" if v["verify_tls"] else "tls NOT checked"
        print(f"{v['name']:<16} {v['source']:<4} {v['url']:<40} {v['username']:<24} {tls}")
        if v.get("error"):
            print(f"    {v['error']}")
    return 1 if any(v.get("error") for v in views) else 0


def _test(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        known, broken = vcstore.usable(s, settings)
    if args.name in broken:
        raise broken[args.name]
    vc = next((v for v in known if v.name == args.name), None)
    if vc is None:
        raise NotFound(f"no vCenter {args.name!r} (see `vbm vcenter list`)")
    result = _probe(vc)
    if args.json:
        say(args, {"name": vc.name, **result.view()}, "")
        return 0 if result.ok else 1
    if result.ok:
        print(result.message)
    else:
        print(f"{vc.name}: connection test failed ({result.kind}): {result.message}")
    if result.thumbprint_sha256:
        print(f"certificate SHA-256 thumbprint: {result.thumbprint_sha256}")
        print(f"certificate SHA-1 thumbprint:   {result.thumbprint_sha1}")
    return 0 if result.ok else 1


def _rm(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as s:
        vcstore.remove(s, settings, args.name)
    say(args, {"deleted": args.name}, f"vCenter {args.name} removed")
    return 0
