"""`vbm channel add|list|show|edit|rm` and `vbm smtp set|show|clear`: notification channels and
the SMTP login stored in the database (as the API does: shared/catalog/channels.py, smtp.py). A
channel's URL (it may embed a token), its HMAC key, a Telegram bot's token and the SMTP password
are read from stdin or asked for without echo, never from the command line, and stored encrypted.
With `--json` each prints what the REST API answers (/api/v1/channels, /api/v1/smtp)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import channels as chstore
from shared.catalog import smtp as smtpstore
from shared.cli.say import fields, listing, plain_actions, say
from shared.clock import utcnow
from shared.db import make_sessionmaker
from shared.db.existing import open_existing
from shared.errors import StoreError
from shared.settings import Settings

COMMANDS = ("channel", "smtp")
TYPES = ("email", "slack", "teams", "webhook", "telegram", "sendmail")
NO_URL = ("email", "sendmail")  # types with no secret to read


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("channel", help="notification channels (stored encrypted, beside configured ones)")
    acts = p.add_subparsers(dest="channel_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", help="add a channel (email, slack, teams, webhook, telegram or sendmail)")
    add.add_argument("name")
    add.add_argument("--type", required=True, choices=TYPES)
    _fields(add)
    edit = acts.add_parser(
        "edit", help="change a stored channel (what is given; secrets with --secrets-stdin)"
    )
    edit.add_argument("name")
    edit.add_argument("--type", choices=TYPES)
    _fields(edit)
    plain_actions(
        acts,
        {
            "list": "every channel, configured (source env) and stored (source api)",
            "show": "one channel (never its URL's path or key)",
            "rm": "remove a stored channel (refused while a job names it)",
        },
    )

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
    st.add_argument("--json", action="store_true", help="the stored server as JSON")
    sh = acts.add_parser("show", help="the SMTP server in effect (never its password)")
    sh.add_argument("--json", action="store_true", help="as JSON")
    acts.add_parser("clear", help="remove the stored SMTP server").add_argument(
        "--json", action="store_true", help="as JSON"
    )


def _fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to", action="append", default=None, metavar="ADDRESS", help="email, sendmail: a recipient"
    )
    parser.add_argument("--on", action="append", choices=("success", "warning", "failure"), default=None)
    parser.add_argument(
        "--level",
        choices=("info", "warning", "critical"),
        default=None,
        help="the lowest level it hears of (default: info, i.e. all that --on lets through)",
    )
    parser.add_argument("--scope", choices=("all", "jobs"), default=None, help="default: all")
    parser.add_argument("--chat-id", default=None, help="telegram: the chat (a number or @channelname)")
    parser.add_argument("--api-url", default=None, help="telegram: the Bot API server (default: Telegram's)")
    parser.add_argument("--sendmail", default=None, metavar="PATH", help="sendmail: the program's path")
    parser.add_argument(
        "--secrets-stdin",
        action="store_true",
        help="read the URL or, for telegram, the bot token (first line) and, for webhooks, the HMAC key"
        " (second line, optional) from stdin",
    )
    parser.add_argument("--hmac", action="store_true", help="webhook: ask for an HMAC key too")
    parser.add_argument("--json", action="store_true", help="the channel as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_existing(settings.db_url, settings.data_dir)
    command = args.channel_command if args.command == "channel" else args.smtp_command
    try:
        sessions = make_sessionmaker(engine)
        actions = {
            ("channel", "add"): _add,
            ("channel", "edit"): _edit,
            ("channel", "list"): _list,
            ("channel", "show"): _show,
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
    """The URL (a Telegram bot's token) and HMAC key: `add` asks for them (but for email and
    sendmail), `edit` reads them only with --secrets-stdin or --hmac."""
    if args.type in NO_URL or (args.channel_command == "edit" and not (args.secrets_stdin or args.hmac)):
        return "", ""
    if args.secrets_stdin:
        lines = sys.stdin.read().splitlines()
        return (lines[0].strip() if lines else ""), (lines[1].strip() if len(lines) > 1 else "")
    what = "Bot token" if args.type == "telegram" else "URL"
    url = getpass.getpass(f"{what} of channel {args.name}: ").strip()
    secret = getpass.getpass(f"HMAC key of channel {args.name}: ").strip() if args.hmac else ""
    return url, secret


def _body(args: argparse.Namespace, telegram: bool) -> dict[str, Any]:
    """The fields given (as the API's body): what is left out is the default (add) or stays (edit)."""
    url, secret = _read(args)
    given = {"type": args.type, "to": args.to, "on": args.on, "level": args.level, "scope": args.scope,
             "chat_id": args.chat_id, "api_url": args.api_url, "sendmail": args.sendmail}  # fmt: skip
    body = {k: v for k, v in given.items() if v is not None}
    body |= {"token" if telegram else "url": url} if url else {}
    return body | ({"secret": secret} if secret else {})


def _add(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    body = {"name": args.name, "to": [], **_body(args, args.type == "telegram")}
    with sessions.begin() as s:
        channel = chstore.candidate_new(s, settings, body)
        chstore.save(s, settings, channel, utcnow())
        view = chstore.get_view(s, settings, channel.name)
    say(args, view, f"channel {channel.name} added ({channel.type}); try it: vbm notify test {channel.name}")
    return 0


def _edit(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    """As PUT /api/v1/channels/NAME."""
    with sessions() as s:
        current = chstore.get_view(s, settings, args.name)
    body = _body(args, (args.type or current["type"]) == "telegram")
    with sessions.begin() as s:
        channel = chstore.candidate_change(s, settings, args.name, body)
        chstore.save(s, settings, channel, utcnow())
        view = chstore.get_view(s, settings, channel.name)
    say(args, view, f"channel {channel.name} changed ({channel.type})")
    return 0


def _show(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        view = chstore.get_view(s, settings, args.name)
    say(args, view, fields(view))
    return 1 if view.get("error") else 0


def _list(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        views = chstore.list_views(s, settings)
    if args.json:
        say(args, listing("channels", views), "")
        return 0
    if not views:
        print("no notification channels (vbm channel add NAME --type TYPE ...)")
    for v in views:
        where = ", ".join(v["to"]) or v.get("endpoint") or ""
        on = ",".join(v["on"])
        print(f"{v['name']:<16} {v['source']:<4} {v['type']:<8} {where:<40} on {on}, level {v['level']}+")
        if v.get("error"):
            print(f"    {v['error']}")
    return 1 if any(v.get("error") for v in views) else 0


def _rm(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as s:
        chstore.remove(s, settings, args.name)
    say(args, {"deleted": args.name}, f"channel {args.name} removed")
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
        view = smtpstore.save(s, settings, smtp, utcnow())
    say(args, view, f"SMTP server {smtp.host}:{smtp.port} stored")
    return 0


def _smtp_show(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        view = smtpstore.view(s, settings)
    say(args, view, fields(view))
    return 0


def _smtp_clear(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as s:
        smtpstore.clear(s, settings)
    say(args, {"deleted": "smtp"}, "stored SMTP server removed")
    return 0
