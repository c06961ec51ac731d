"""`vbm apikey create|list|revoke`: REST API keys (a key is shown once, at its creation); each
belongs to a user and carries at most that user's role. With `--json` each prints what the REST API
answers (/api/v1/keys): `create --json` the key's view with the key itself, once."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import apikeys
from shared.cli.runs import when
from shared.cli.say import listing, say
from shared.clock import iso, utcnow
from shared.model.access import Role


def add_parsers(sub: Any) -> None:
    key = sub.add_parser("apikey", help="REST API keys: create, list, revoke")
    k_acts = key.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    create = k_acts.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("name")
    create.add_argument("--user", help="whose key (default: the first admin; made if none exists)")
    create.add_argument(
        "--role",
        choices=[r.value for r in Role],
        help="what it may do (default and at most: its owner's role)",
    )
    create.add_argument("--expires-days", type=int, metavar="DAYS", help="it stops working after DAYS days")
    create.add_argument("--json", action="store_true", help="the key's view with the key (shown once)")
    ls = k_acts.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--user", help="only this user's keys")
    ls.add_argument("--json", action="store_true")
    revoke = k_acts.add_parser("revoke", help="revoke a key at once (by name or id)")
    revoke.add_argument("name")
    revoke.add_argument("--user", help="only if it is this user's key")
    revoke.add_argument("--json", action="store_true")


def dispatch(action: str, args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
    if action == "create":
        now = utcnow()
        if args.expires_days is not None and args.expires_days < 1:
            raise ValueError("--expires-days must be 1 or more")
        expires = None if args.expires_days is None else now + timedelta(days=args.expires_days)
        role = None if args.role is None else Role(args.role)
        with sessions.begin() as s:
            info, key = apikeys.create(s, args.name, now, owner=args.user, role=role, expires_at=expires)
        say(args, {**info.public(), "key": key}, key)
        print(f"API key {info.name!r} created: store it now, it is not shown again", file=sys.stderr)
        return 0
    if action == "revoke":
        with sessions.begin() as s:
            info = apikeys.revoke(s, args.name, utcnow(), owner=args.user)
        say(args, info.public(), f"API key {info.name!r} revoked")
        return 0
    with sessions() as s:
        keys = apikeys.list_keys(s, owner=args.user)
    if args.json:
        say(args, listing("keys", [k.public() for k in keys]), "")
        return 0
    print(f"{'name':<20} {'id':<16} {'owner':<14} {'role':<9} {'created':<21} {'last used':<21} state")
    for k in keys:
        state = "revoked" if k.revoked_at else f"expires {when(iso(k.expires_at))}" if k.expires_at else "ok"
        print(
            f"{k.name[:20]:<20} {k.id:<16} {k.owner[:14]:<14} {k.role.value:<9} {when(iso(k.created_at)):<21}"
            f" {when(iso(k.last_used_at)):<21} {state}"
        )
    return 0
