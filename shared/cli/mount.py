"""`vbm mount list|add|show|edit|remove|test|mount|unmount`: the NFS/CIFS shares vbm mounts under
`<data_dir>/mounts/<name>`, on the database directly (as the API does: shared/catalog/mounts.py)
and mounted by this process (mount(8) is host-wide). A CIFS password is read from stdin
(`--password-stdin`) or asked for without echo, never taken from the command line, and stored
encrypted. With `--json` each prints what the REST API answers (/api/v1/mounts). The exit status
is 1 when a mount, unmount or test failed."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import mounts as mountstore
from shared.cli.say import fields, listing, plain_actions, say
from shared.clock import utcnow
from shared.db import make_sessionmaker
from shared.db.existing import open_existing
from shared.errors import Conflict, StoreError
from shared.mounts import connect, manager
from shared.settings import Settings

COMMANDS = ("mount",)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "mount", help="NFS/CIFS shares vbm mounts under <data dir>/mounts (passwords encrypted)"
    )
    acts = p.add_subparsers(dest="mount_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", help="add a share and mount it")
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=("nfs", "cifs"))
    add.add_argument("--server", required=True, help="host name or IP address")
    _fields(add)
    add.add_argument("--skip-mount", action="store_true", help="store the share without mounting it")
    edit = acts.add_parser("edit", help="change a share (what is given; applies at its next mount)")
    edit.add_argument("name")
    edit.add_argument("--server", help="host name or IP address")
    _fields(edit)
    plain_actions(
        acts,
        {
            "list": "every share with its state (mounted, unmounted, stale)",
            "show": "one share, its state and the mount command line (never its password)",
            "remove": "unmount and remove a share (refused while a repository is on it)",
            "test": "test the server without mounting: name, port, login, share or export, a probe file",
            "mount": "mount a share and check it is writable",
            "unmount": "unmount a share",
        },
    )


def _fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", help="nfs: the exported path, e.g. /srv/backup")
    parser.add_argument("--share", help="cifs: the share's name")
    parser.add_argument("--version", help="nfs: 3, 4, 4.0, 4.1, 4.2; cifs: 2.0 to 3.1.1")
    parser.add_argument("--options", help="more mount options, comma-separated (hard,port=2049)")
    parser.add_argument("--username", help="cifs: the login (none: guest)")
    parser.add_argument("--domain", help="cifs: the login's domain")
    parser.add_argument("--password-stdin", action="store_true", help="cifs: read the password from stdin")
    parser.add_argument("--json", action="store_true", help="print what the REST API answers")


def run(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        action = {
            "add": _add, "edit": _edit, "list": _list, "show": _show, "remove": _remove,
            "test": _test, "mount": _mount, "unmount": _unmount,
        }  # fmt: skip
        return action[args.mount_command](args, settings, sessions)
    except StoreError as exc:
        print(f"vbm mount {args.mount_command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        engine.dispose()


def _body(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("server", "export", "share", "version", "options", "username", "domain")
    body: dict[str, Any] = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if args.password_stdin:
        body["password"] = sys.stdin.read().rstrip("\r\n")
    elif args.mount_command == "add" and args.kind == "cifs" and args.username:
        body["password"] = getpass.getpass(f"password of {args.username} for mount {args.name}: ")
    return body


def _add(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    body = {"name": args.name, "kind": args.kind, **_body(args)}
    with sessions.begin() as s:
        share = mountstore.candidate_new(s, body)
        mountstore.save(s, settings, share, utcnow())
    outcome = None if args.skip_mount else asyncio.run(manager.mount(share, settings))
    with sessions() as s:
        view = mountstore.get_view(s, settings, share.name)
    text = f"mount {share.name} added: {view['command']}"
    if outcome is not None:
        text += f"\n{'mounted' if outcome.ok else 'NOT MOUNTED'}: {outcome.message}"
    say(args, {**view, "mount": outcome.view() if outcome else None}, text)
    return 0 if outcome is None or outcome.ok else 1


def _edit(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as s:
        share = mountstore.candidate_change(s, settings, args.name, _body(args))
        mountstore.save(s, settings, share, utcnow())
        view = mountstore.get_view(s, settings, args.name)
    say(args, view, f"mount {args.name} changed (at its next mount): {view['command']}")
    return 0


def _show(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        view = mountstore.get_view(s, settings, args.name)
    say(args, view, fields(view))
    return 0


def _list(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        views = mountstore.list_views(s, settings)
    if args.json:
        say(args, listing("mounts", views), "")
        return 0
    if not views:
        print("no mounts: add one with `vbm mount add NAME --kind nfs --server HOST --export /path`")
    for v in views:
        where = f"{v['server']}:{v['export']}" if v["kind"] == "nfs" else f"//{v['server']}/{v['share']}"
        print(f"{v['name']:<16} {v['kind']:<4} {v['state']:<9} {where}")
        print(f"    {v['mount_point']}: {v['state_detail']}")
    return 0


def _remove(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        mountstore.remove(s, settings, args.name)  # refused early while used (not committed)
    outcome = asyncio.run(manager.unmount(args.name, settings))
    if not outcome.ok:
        raise Conflict(f"mount {args.name!r} cannot be removed while mounted: {outcome.message}")
    with sessions.begin() as s:
        mountstore.remove(s, settings, args.name)
    say(args, {"deleted": args.name}, f"mount {args.name} unmounted and removed")
    return 0


def _stored(settings: Settings, sessions: sessionmaker[Session], name: str) -> Any:
    with sessions() as s:
        return mountstore.decrypted(mountstore.stored(s, name), settings)


def _test(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    tested = asyncio.run(
        connect.test(_stored(settings, sessions, args.name), settings.mounts.connect_timeout)
    )
    say(
        args,
        {"name": args.name, **tested.view()},
        f"{'ok' if tested.ok else 'FAILED (' + tested.step + ')'}: {tested.message}",
    )
    return 0 if tested.ok else 1


def _mount(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    outcome = asyncio.run(manager.mount(_stored(settings, sessions, args.name), settings))
    say(args, {"name": args.name, **outcome.view()}, f"{outcome.state}: {outcome.message}")
    return 0 if outcome.ok else 1


def _unmount(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        mountstore.stored(s, args.name)
    outcome = asyncio.run(manager.unmount(args.name, settings))
    say(args, {"name": args.name, **outcome.view()}, f"{outcome.state}: {outcome.message}")
    return 0 if outcome.ok else 1
