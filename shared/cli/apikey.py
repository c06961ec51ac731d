"""`vbm apikey create|list|revoke`: REST API keys (a key is shown once, at its creation)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import apikeys
from shared.cli.runs import when
from shared.clock import iso, utcnow


def add_parsers(sub: Any) -> None:
    key = sub.add_parser("apikey", help="REST API keys: create, list, revoke")
    k_acts = key.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    k_acts.add_parser("create", help="create a key and print it (shown once)").add_argument("name")
    k_acts.add_parser("list", help="list keys (never their secrets)")
    k_acts.add_parser("revoke", help="revoke a key at once").add_argument("name")


def dispatch(action: str, args: argparse.Namespace, sessions: sessionmaker[Session]) -> int:
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
