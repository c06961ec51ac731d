"""`vbm user add|list|passwd|disable|enable|role`: the people who may log in, and their roles.

Passwords are read from the terminal (twice, not echoed) or, with `--password-stdin`, from the
first line of standard input (for scripts); never from the command line, where `ps` shows them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import users
from shared.cli.runs import when
from shared.clock import iso, utcnow
from shared.model.access import Role
from shared.settings import Settings


def add_parsers(sub: Any) -> None:
    user = sub.add_parser("user", help="people who may log in: add, list, passwd, disable, enable, role")
    acts = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", help="add a user (asks for the password)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--display-name", default="")
    _password_args(add)
    add.add_argument("--no-password", action="store_true", help="no password yet (API keys only)")
    acts.add_parser("list", help="list users").add_argument("--json", action="store_true")
    passwd = acts.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    _password_args(passwd)
    acts.add_parser("disable", help="disable a user: sessions end, keys stop working").add_argument("name")
    acts.add_parser("enable", help="enable a user again").add_argument("name")
    role = acts.add_parser("role", help="change a user's role (their keys follow at once)")
    role.add_argument("name")
    role.add_argument("role", choices=[r.value for r in Role])


def _password_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )


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
            print(json.dumps([u.public() for u in found], indent=2, default=str))
            return 0
        print(f"{'name':<20} {'role':<9} {'enabled':<8} {'password':<9} {'last login':<21} display name")
        for u in found:
            print(
                f"{u.name[:20]:<20} {u.role.value:<9} {'yes' if u.enabled else 'no':<8}"
                f" {'set' if u.has_password else 'not set':<9} {when(iso(u.last_login_at)):<21}"
                f" {u.display_name}"
            )
        return 0
    if action == "add":
        password = None if args.no_password else _read_password(args)
        with sessions.begin() as s:
            user = users.add(s, args.name, args.role, now, rules, password, args.display_name)
        print(f"user {user.name!r} added ({user.role.value})")
        return 0
    if action == "passwd":
        password = _read_password(args)
        with sessions.begin() as s:
            users.set_password(s, args.name, password, now, rules)
        print(f"password of {args.name!r} set; their sessions ended")
        return 0
    with sessions.begin() as s:
        if action == "role":
            user = users.change(s, args.name, now, role=args.role)
            print(f"{user.name!r} is now {user.role.value}")
        else:
            user = users.change(s, args.name, now, enabled=action == "enable")
            print(f"{user.name!r} {'enabled' if user.enabled else 'disabled: sessions ended, keys refused'}")
    return 0
