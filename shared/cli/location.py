"""`vbm location add|list|rm`: repository locations and their credentials, on the database
directly (as the API does: shared/catalog/locations.py). A location is opened with the given
credentials before it is saved (unless `--skip-test`); secrets are read from stdin or asked for
without echo, never from the command line, and stored encrypted."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import locations as locstore
from shared.clock import utcnow
from shared.db import make_sessionmaker
from shared.db.existing import NoDatabase, open_existing
from shared.errors import StoreError
from shared.repo.locations import Credentials, CredentialsFor, try_open
from shared.settings import Settings

COMMANDS = ("location",)
SECRETS = {"s3": "secret_key", "azure": "account_key", "sftp": "password", "rclone": "config"}


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("location", help="repository locations and their credentials (stored encrypted)")
    acts = p.add_subparsers(dest="location_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", help="add a location (opened with its credentials first)")
    add.add_argument("name")
    add.add_argument("--url", required=True, help="a path, s3://, azure://, sftp:// or rclone://")
    add.add_argument("--access-key", help="s3: the access key id (not secret)")
    add.add_argument("--known-hosts-file", metavar="FILE", help="sftp: the server's known_hosts lines")
    add.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the secret from stdin, to its end (s3 secret key, azure account key, sftp password"
        " or private key with --private-key, rclone config text)",
    )
    add.add_argument("--private-key", action="store_true", help="sftp: the secret is a private key")
    add.add_argument("--skip-test", action="store_true", help="save without opening the location")
    ls = acts.add_parser("list", help="every location: the configured repository (env) and stored ones")
    ls.add_argument("--json", action="store_true", help="as JSON")
    rm = acts.add_parser("rm", help="remove a stored location (refused while a job uses it)")
    rm.add_argument("name")


def credentials(settings: Settings) -> CredentialsFor:
    """For commands that work without a database too (`vbm repo`): the stored locations'
    credentials when the database is there, else the settings'."""

    def find(location: str) -> Credentials:
        try:
            engine = open_existing(settings.db_url, settings.data_dir, migrate=False)
        except NoDatabase:
            return Credentials.of(settings)
        try:
            return locstore.lookup(settings, make_sessionmaker(engine))(location)
        except SQLAlchemyError:  # an older schema without stored locations
            return Credentials.of(settings)
        finally:
            engine.dispose()

    return find


def run(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        action = {"add": _add, "list": _list, "rm": _rm}[args.location_command]
        return action(args, settings, sessions)
    except StoreError as exc:
        print(f"vbm location {args.location_command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        engine.dispose()


def _secret(args: argparse.Namespace, field: str) -> str:
    if args.secret_stdin:
        text = sys.stdin.read()
        return text if field in ("config", "private_key") else text.rstrip("\r\n")
    return getpass.getpass(f"{field.replace('_', ' ')} of location {args.name}: ")


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name, "url": args.url}
    kind = locstore.kind_of(args.url)
    if kind == "s3":
        body["access_key"] = args.access_key
    if kind == "sftp" and args.known_hosts_file:
        with open(args.known_hosts_file) as f:
            body["known_hosts"] = f.read()
    field = "private_key" if kind == "sftp" and args.private_key else SECRETS.get(kind)
    if field:
        body[field] = _secret(args, field)
    return body


def _add(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    body = _body(args)
    with sessions() as s:
        loc = locstore.candidate_new(s, settings, body)
    if args.skip_test:
        print(f"location {loc.name}: saved without opening it (--skip-test)")
    else:
        failed = asyncio.run(try_open(loc.url, loc.credentials()))
        if failed is not None:
            print(f"vbm location add: {loc.url} cannot be opened: {failed}", file=sys.stderr)
            print("nothing was saved (--skip-test saves it anyway)", file=sys.stderr)
            return 1
    with sessions.begin() as s:
        locstore.candidate_new(s, settings, body)
        locstore.save(s, settings, loc, utcnow())
    print(f"location {loc.name} added ({loc.url})")
    return 0


def _list(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        views = locstore.list_views(s, settings)
    if args.json:
        print(json.dumps(views, indent=2, default=str))
        return 0
    for v in views:
        secrets = [f"{k} {v[k]}" for k in locstore.KINDS[v["kind"]][1]]
        print(f"{v['name']:<16} {v['source']:<4} {v['url']:<48} {', '.join(secrets)}")
        if v.get("error"):
            print(f"    {v['error']}")
    return 1 if any(v.get("error") for v in views) else 0


def _rm(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as s:
        locstore.remove(s, args.name)
    print(f"location {args.name} removed")
    return 0
