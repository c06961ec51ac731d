"""`vbm location add|list|show|edit|rm`: repository locations and their credentials, on the
database directly (as the API does: shared/catalog/locations.py). A location is opened with the
given credentials before it is saved (unless `--skip-test`); secrets are read from stdin or asked
for without echo, never from the command line, and stored encrypted. With `--json` each prints
what the REST API answers (/api/v1/locations)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import locations as locstore
from shared.cli.say import fields, listing, plain_actions, say
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
    _fields(add)
    edit = acts.add_parser("edit", help="change a stored location (what is given; opened first)")
    edit.add_argument("name")
    edit.add_argument("--url", help="a path, s3://, azure://, sftp:// or rclone://")
    _fields(edit)
    plain_actions(
        acts,
        {
            "list": "every location: the configured repository (env) and stored ones",
            "show": "one location (never its secrets)",
            "rm": "remove a stored location (refused while a job uses it)",
        },
    )


def _fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--access-key", help="s3: the access key id (not secret)")
    parser.add_argument("--known-hosts-file", metavar="FILE", help="sftp: the server's known_hosts lines")
    parser.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the secret from stdin, to its end (s3 secret key, azure account key, sftp password"
        " or private key with --private-key, rclone config text)",
    )
    parser.add_argument("--private-key", action="store_true", help="sftp: the secret is a private key")
    parser.add_argument("--skip-test", action="store_true", help="save without opening the location")
    parser.add_argument("--json", action="store_true", help="the location and its test as JSON")


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
        action = {"add": _add, "edit": _edit, "list": _list, "show": _show, "rm": _rm}
        return action[args.location_command](args, settings, sessions)
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


def _body(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """The fields given on the command line (and the secret from stdin or a prompt) for a
    location at `url`; `add` always asks for the secret, `edit` only with --secret-stdin."""
    body: dict[str, Any] = {"url": args.url} if args.url else {}
    kind = locstore.kind_of(url)
    if kind == "s3" and args.access_key is not None:
        body["access_key"] = args.access_key
    if kind == "sftp" and args.known_hosts_file:
        with open(args.known_hosts_file) as f:
            body["known_hosts"] = f.read()
    field = "private_key" if kind == "sftp" and args.private_key else SECRETS.get(kind)
    if field and (args.location_command == "add" or args.secret_stdin):
        body[field] = _secret(args, field)
    return body


def _add(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    body = {"name": args.name, **_body(args, args.url)}
    with sessions() as s:
        loc = locstore.candidate_new(s, settings, body)
    tested = _opened(args, loc)
    if tested is None:
        return 1
    with sessions.begin() as s:
        locstore.candidate_new(s, settings, body)
        view = locstore.row_view(locstore.save(s, settings, loc, utcnow()), secrets=set(loc.secrets))
    say(args, {**view, "test": tested}, f"location {loc.name} added ({loc.url})")
    return 0


def _edit(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """As PUT /api/v1/locations/NAME: what is given changes, the rest (secrets too) stays."""
    with sessions() as s:
        url = args.url or locstore.get_view(s, settings, args.name)["url"]
    body = _body(args, url)
    with sessions() as s:
        loc = locstore.candidate_change(s, settings, args.name, body)
    tested = _opened(args, loc)
    if tested is None:
        return 1
    with sessions.begin() as s:
        view = locstore.row_view(locstore.save(s, settings, loc, utcnow()), secrets=set(loc.secrets))
    say(args, {**view, "test": tested}, f"location {loc.name} changed ({loc.url})")
    return 0


def _opened(args: argparse.Namespace, loc: locstore.Location) -> dict[str, Any] | None:
    """The open test's view for the answer, or None when it failed (said on stderr)."""
    if args.skip_test:
        if not args.json:
            print(f"location {loc.name}: saved without opening it (--skip-test)")
        return locstore.SKIPPED
    failed = asyncio.run(try_open(loc.url, loc.credentials()))
    if failed is not None:
        print(f"vbm location {args.location_command}: {loc.url} cannot be opened: {failed}", file=sys.stderr)
        print("nothing was saved (--skip-test saves it anyway)", file=sys.stderr)
        return None
    return locstore.open_test(loc.url, None)


def _show(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        view = locstore.get_view(s, settings, args.name)
    say(args, view, fields(view))
    return 1 if view.get("error") else 0


def _list(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        views = locstore.list_views(s, settings)
    if args.json:
        say(args, listing("locations", views), "")
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
    say(args, {"deleted": args.name}, f"location {args.name} removed")
    return 0
