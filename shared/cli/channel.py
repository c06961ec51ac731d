"""`vbm channel add|list|rm` and `vbm smtp set|show|clear`: notification channels and the SMTP
login stored in the database (as the API does: shared/catalog/channels.py, smtp.py). A channel's
URL (it may embed a token), its HMAC key and the SMTP password are read from stdin or asked for
without echo, never from the command line, and stored encrypted."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import channels as chstore
from shared.catalog import smtp as smtpstore
from shared.clock import utcnow
from shared.db import make_sessionmaker
from shared.db.existing import open_existing
from shared.errors import StoreError
from shared.settings import Settings

COMMANDS = ("channel", "smtp")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("channel", help="notification channels (stored encrypted, beside configured ones)")
    acts = p.add_subparsers(dest="channel_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", help="add a channel (email, slack, teams or webhook)")
    add.add_argument("name")
    add.add_argument("--type", required=True, choices=("email", "slack", "teams", "webhook"))
    add.add_argument("--to", action="append", default=[], metavar="ADDRESS", help="email: a recipient")
    add.add_argument("--on", action="append", choices=("success", "warning", "failure"), default=None)
    add.add_argument("--scope", choices=("all", "jobs"), default="all")
    add.add_argument(
        "--secrets-stdin",
        action="store_true",
        help="read the URL (first line) and, for webhooks, the HMAC key (second line, optional) from stdin",
    )
    add.add_argument("--hmac", action="store_true", help="webhook: ask for an HMAC key too")
    ls = acts.add_parser("list", help="every channel, configured (source env) and stored (source api)")
    ls.add_argument("--json", action="store_true", help="as JSON")
    rm = acts.add_parser("rm", help="remove a stored channel (refused while a job names it)")
    rm.add_argument("name")

    p = sub.add_parser("smtp", help="the mail server email channels send through (stored encrypted)")
    acts = p.add_subparsers(dest="smtp_command", required=True, metavar="ACTION")
    st = acts.add_parser("set", help="store the SMTP server (the password from stdin or a prompt)")
    st.add_argument("--host", required=True)
    st.add_argument("--port", type=int, default=587)
    st.add_argument("--security", choices=("starttls", "tls", "none"), default="starttls")
    st.add_argument("--username", default="")
    st.add_argument("--sender", default="vbm@localhost")
    st.add_argument("--ca-file", metavar="FILE")
    st.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sh = acts.add_parser("show", help="the SMTP server in effect (never its password)")
    sh.add_argument("--json", action="store_true", help="as JSON")
    acts.add_parser("clear", help="remove the stored SMTP server")


def run(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_existing(settings.db_url, settings.data_dir)
    command = args.channel_command if args.command == "channel" else args.smtp_command
    try:
        sessions = make_sessionmaker(engine)
        actions = {
            ("channel", "add"): _add,
            ("channel", "list"): _list,
            ("channel", "rm"): _rm,
            ("smtp", "set"): _smtp_set,
            ("smtp", "show"): _smtp_show,
            ("smtp", "clear"): _smtp_clear,
        }
        return actions[args.command, command](args, settings, sessions)
    except StoreError as exc:
        print(f"vbm {args.command} {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        engine.dispose()


def _read(args: argparse.Namespace) -> tuple[str, str]:
    if args.type == "email":
        return "", ""
    if args.secrets_stdin:
        lines = sys.stdin.read().splitlines()
        return (lines[0].strip() if lines else ""), (lines[1].strip() if len(lines) > 1 else "")
    url = getpass.getpass(f"URL of channel {args.name}: ").strip()
    secret = getpass.getpass(f"HMAC key of channel {args.name}: ").strip() if args.hmac else ""
    return url, secret


def _add(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    url, secret = _read(args)
    body: dict[str, Any] = {"name": args.name, "type": args.type, "to": args.to, "scope": args.scope}
    body |= {"on": args.on} if args.on else {}
    body |= {"url": url} if url else {}
    body |= {"secret": secret} if secret else {}
    with sessions.begin() as s:
        channel = chstore.candidate_new(s, settings, body)
        chstore.save(s, settings, channel, utcnow())
    print(f"channel {channel.name} added ({channel.type}); try it: vbm notify test {channel.name}")
    return 0


def _list(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        views = chstore.list_views(s, settings)
    if args.json:
        print(json.dumps(views, indent=2, default=str))
        return 0
    if not views:
        print("no notification channels (vbm channel add NAME --type TYPE ...)")
    for v in views:
        where = ", ".join(v["to"]) or v.get("endpoint") or ""
        print(f"{v['name']:<16} {v['source']:<4} {v['type']:<8} {where:<40} on {','.join(v['on'])}")
        if v.get("error"):
            print(f"    {v['error']}")
    return 1 if any(v.get("error") for v in views) else 0


def _rm(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as s:
        chstore.remove(s, settings, args.name)
    print(f"channel {args.name} removed")
    return 0


def _smtp_set(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    body: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "security": args.security,
        "username": args.username,
        "sender": args.sender,
        "ca_file": args.ca_file,
    }
    if args.password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\r\n")
    elif args.username:
        body["password"] = getpass.getpass(f"SMTP password of {args.username}: ")
    with sessions.begin() as s:
        smtp = smtpstore.candidate(s, settings, body)
        smtpstore.save(s, settings, smtp, utcnow())
    print(f"SMTP server {smtp.host}:{smtp.port} stored")
    return 0


def _smtp_show(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        view = smtpstore.view(s, settings)
    if args.json:
        print(json.dumps(view, indent=2, default=str))
        return 0
    for key, value in view.items():
        print(f"{key:<10} {value}")
    return 0


def _smtp_clear(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as s:
        smtpstore.clear(s, settings)
    print("stored SMTP server removed")
    return 0
