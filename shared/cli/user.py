"""`vbm user add|list|show|edit|passwd|disable|enable|role`: the people who may log in, and their
roles. With `--json` each prints the user as the REST API answers it (/api/v1/users).

Passwords are read from the terminal (twice, not echoed) or, with `--password-stdin`, from the
first line of standard input (for scripts); never from the command line, where `ps` shows them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import users
from shared.cli.runs import when
from shared.cli.say import fields, listing, say
from shared.clock import iso, utcnow
from shared.model.access import Role
from shared.settings import Settings


def add_parsers(sub: Any) -> None:
    user = sub.add_parser(
        "user", help="people who may log in: add, list, show, edit, passwd, disable, enable, role"
    )
    acts = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", help="add a user (asks for the password)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--display-name", default="")
    _password_args(add)
    add.add_argument("--no-password", action="store_true", help="no password yet (API keys only)")
    _json_arg(acts.add_parser("list", help="list users"))
    _json_arg(acts.add_parser("show", help="one user")).add_argument("name")
    edit = acts.add_parser("edit", help="change a user's role, state, display name or password")
    edit.add_argument("name")
    edit.add_argument("--role", choices=[r.value for r in Role])
    state = edit.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="state", action="store_const", const="enabled")
    state.add_argument("--disable", dest="state", action="store_const", const="disabled")
    edit.add_argument("--display-name")
    edit.add_argument(
        "--password-stdin", action="store_true", help="a new password, from the first line of stdin"
    )
    _json_arg(edit)
    passwd = acts.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    _password_args(passwd)
    _json_arg(
        acts.add_parser("disable", help="disable a user: sessions end, keys stop working")
    ).add_argument("name")
    _json_arg(acts.add_parser("enable", help="enable a user again")).add_argument("name")
    role = _json_arg(acts.add_parser("role", help="change a user's role (their keys follow at once)"))
    role.add_argument("name")
    role.add_argument("role", choices=[r.value for r in Role])


def _json_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print the user as the REST API answers it")
    return parser


def _password_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )
    _json_arg(parser)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask the password on: use --password-stdin")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def dispatch(
    action: str, args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]
) -> int:
    rules, now = settings.security, utcnow()
    if action == "list":
        with sessions() as s:
            found = users.list_users(s)
        if args.json:
            say(args, listing("users", [u.public() for u in found]), "")
            return 0
        print(f"{'name':<20} {'role':<9} {'enabled':<8} {'password':<9} {'last login':<21} display name")
        for u in found:
            print(
                f"{u.name[:20]:<20} {u.role.value:<9} {'yes' if u.enabled else 'no':<8}"
                f" {'set' if u.has_password else 'not set':<9} {when(iso(u.last_login_at)):<21}"
                f" {u.display_name}"
            )
        return 0
    if action == "show":
        with sessions() as s:
            user = users.info(users.get(s, args.name))
        view = user.public()
        say(args, view, fields(view))
        return 0
    if action == "add":
        password = None if args.no_password else _read_password(args)
        with sessions.begin() as s:
            user = users.add(s, args.name, args.role, now, rules, password, args.display_name)
        say(args, user.public(), f"user {user.name!r} added ({user.role.value})")
        return 0
    if action == "passwd":
        password = _read_password(args)
        with sessions.begin() as s:
            user = users.set_password(s, args.name, password, now, rules)
        say(args, {"user": user.public()}, f"password of {args.name!r} set; their sessions ended")
        return 0
    if action == "edit":
        return _edit(args, settings, sessions)
    with sessions.begin() as s:
        if action == "role":
            user = users.change(s, args.name, now, role=args.role)
            text = f"{user.name!r} is now {user.role.value}"
        else:
            user = users.change(s, args.name, now, enabled=action == "enable")
            text = f"{user.name!r} {'enabled' if user.enabled else 'disabled: sessions ended, keys refused'}"
    say(args, user.public(), text)
    return 0


def _edit(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """As PUT /api/v1/users/NAME: what is given changes, the rest stays."""
    rules, now = settings.security, utcnow()
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    role = None if args.role is None else Role(args.role)
    enabled = None if args.state is None else args.state == "enabled"  # a word: the audit keeps it
    with sessions.begin() as s:
        user = users.change(s, args.name, now, role=role, enabled=enabled, display_name=args.display_name)
        if password is not None:
            user = users.set_password(s, args.name, password, now, rules)
    say(
        args,
        user.public(),
        f"user {user.name!r} changed ({user.role.value}, {'enabled' if user.enabled else 'disabled'})",
    )
    return 0
