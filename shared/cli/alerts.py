"""`vbm alerts` (list, acknowledge) and `vbm notify` (test the channels, the delivery log).

With `--json` each prints what the API answers (GET /api/v1/alerts, POST .../ack,
GET /api/v1/notifications, POST /api/v1/notifications/test), made by the same functions, and
nothing else on stdout; without it, lines for people."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from shared.clock import utcnow
from shared.errors import Invalid
from shared.settings import Settings

COMMANDS = ("alerts", "notify")
JSON_HELP = "print what the API answers, as JSON"


def add_parsers(sub: Any) -> None:
    a = sub.add_parser("alerts", help="alerts: list the open ones (or all), acknowledge")
    a_acts = a.add_subparsers(dest="alerts_command", metavar="ACTION")
    ls = a_acts.add_parser("ls", help="list alerts, newest first (the default action)")
    for parser in (a, ls):  # `ls` only sets what it is given (else it would reset what came before it)
        kw: dict[str, Any] = {"default": argparse.SUPPRESS} if parser is ls else {}
        parser.add_argument("--all", action="store_true", help="acknowledged ones too", **kw)
        parser.add_argument("--severity", choices=("info", "warning", "error", "critical"), **kw)
        parser.add_argument("--kind", help="only of this kind, e.g. verify_failed", **kw)
        parser.add_argument("--vm", help="only about this VM (its name)", **kw)
        _window_arguments(parser, 50, kw)
    ack = a_acts.add_parser("ack", help="acknowledge alerts (they leave the open list)")
    ack.add_argument("alert_ids", nargs="+", metavar="ALERT_ID")
    ack.add_argument("--json", action="store_true", help="the alert as the API answers (a list when several)")
    n = sub.add_parser("notify", help="notification channels: send a test, show the delivery log")
    n_acts = n.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    test = n_acts.add_parser("test", help="send a test message over every channel (or one)")
    test.add_argument("channel", nargs="?", metavar="CHANNEL")
    test.add_argument("--json", action="store_true", help=JSON_HELP)
    log = n_acts.add_parser("log", help="recent deliveries: sent or failed, attempts, errors")
    log.add_argument("--channel", help="only to this channel")
    log.add_argument("--state", choices=("pending", "sent", "failed"))
    log.add_argument("--outcome", help="only about this outcome (success, warning, failure...)")
    log.add_argument("--alert", metavar="ALERT_ID", help="only the messages about this alert")
    _window_arguments(log, 30, {})
    channels = n_acts.add_parser("channels", help="the configured channels (without their secrets)")
    channels.add_argument("--json", action="store_true", help=JSON_HELP)


def _window_arguments(parser: argparse.ArgumentParser, limit: int, kw: dict[str, Any]) -> None:
    """The window of a list, as the API's query parameters (shared/catalog/listing.py)."""
    parser.add_argument("--limit", type=int, **({"default": limit} | kw))
    parser.add_argument("--since", help="from this time (ISO 8601)", **kw)
    parser.add_argument("--until", help="before this time (ISO 8601)", **kw)
    parser.add_argument("--cursor", help="the next_cursor of the page before (--json shows it)", **kw)
    parser.add_argument("--json", action="store_true", help=JSON_HELP, **kw)


def _query(args: argparse.Namespace, names: Iterable[str]) -> dict[str, str]:
    """The API's query string for the options given."""
    found = {name: getattr(args, name, None) for name in names}
    return {name: str(value) for name, value in found.items() if value is not None}


def _print_json(answer: Any) -> None:
    print(json.dumps(answer, indent=2, default=str))


def with_stored(settings: Settings) -> Settings:
    """`settings` with the channels and SMTP server stored through the API (`vbm channel`,
    `vbm smtp`), when there is a database."""
    from sqlalchemy.exc import SQLAlchemyError

    from shared.catalog import channels
    from shared.db import make_sessionmaker
    from shared.db.existing import NoDatabase, open_existing

    try:
        engine = open_existing(settings.db_url, settings.data_dir, migrate=False)
    except NoDatabase:
        return settings
    try:
        with make_sessionmaker(engine)() as s:
            return settings.model_copy(update={"notifications": channels.effective(s, settings)})
    except SQLAlchemyError:  # an older schema: no stored channels
        return settings
    finally:
        engine.dispose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _run(args, settings)
    except Invalid as exc:
        option = exc.field.replace("_", "-")
        print(f"vbm {args.command}: --{option}: {exc.message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "notify":
        settings = with_stored(settings)
    if args.command == "notify" and args.notify_command == "channels":
        return _channels(args, settings)
    if args.command == "notify" and args.notify_command == "test":
        return _test(args, settings)
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        if args.command == "notify":
            return _log(args, settings, sessions)
        if args.alerts_command == "ack":
            return _ack(args, sessions)
        return _list(args, sessions)
    finally:
        engine.dispose()


def _list(args: argparse.Namespace, sessions: Any) -> int:
    from shared.catalog.alerts import FILTERS, alerts_page
    from shared.catalog.listing import Window

    q = _query(args, ("limit", "since", "until", "cursor", "severity", "kind", "vm"))
    window = Window.parse(q, FILTERS, max_limit=1000)
    with sessions() as s:
        page = alerts_page(s, window, everything=args.all, severity=args.severity, kind=args.kind, vm=args.vm)
    if args.json:
        _print_json(page)
        return 0
    for a in page["alerts"]:
        seen = " (acknowledged)" if a["acknowledged_at"] else ""
        print(
            f"{datetime.fromisoformat(a['created_at']):%Y-%m-%d %H:%M:%S} {a['severity']:<8} {a['id']}"
            f"  {a['kind']}{seen}\n    {a['message']}"
        )
    shown, total = len(page["alerts"]), page["total"]
    print(
        f"{total} {'alert(s)' if args.all else 'open alert(s)'}"
        + (f", {shown} shown" if total > shown else "")
    )
    return 0


def _ack(args: argparse.Namespace, sessions: Any) -> int:
    from shared.catalog.alerts import acknowledge, alert_view

    missing, views = [], []
    with sessions.begin() as s:
        for alert_id in args.alert_ids:
            alert = acknowledge(s, alert_id, utcnow())
            if alert is None:
                missing.append(alert_id)
            else:
                views.append(alert_view(alert))
    out = sys.stderr if args.json else sys.stdout
    for alert_id in missing:
        print(f"vbm alerts ack: no alert {alert_id!r} (see `vbm alerts --all`)", file=out)
    if args.json:
        if views:
            _print_json(views[0] if len(args.alert_ids) == 1 else views)
    else:
        print(f"{len(views)} alert(s) acknowledged")
    return 1 if missing else 0


def _log(args: argparse.Namespace, settings: Settings, sessions: Any) -> int:
    from shared.catalog.listing import Window
    from shared.notify.channels import channels_view
    from shared.notify.log import FILTERS, deliveries

    q = _query(args, ("limit", "since", "until", "cursor", *FILTERS))
    window = Window.parse(q, FILTERS)
    with sessions() as s:
        page = deliveries(s, window, q)
    if args.json:
        _print_json({"channels": channels_view(settings.notifications), **page})
        return 0
    for row in page["deliveries"]:
        print(
            f"{datetime.fromisoformat(row['created_at']):%Y-%m-%d %H:%M:%S} {row['state']:<6}"
            f" {row['channel']:<16} x{row['attempts']} {row['title']}"
            + (f"\n    {row['error']}" if row["error"] else "")
        )
    return 0


def _channels(args: argparse.Namespace, settings: Settings) -> int:
    from shared.notify.channels import channels_view

    views = channels_view(settings.notifications)
    if args.json:
        _print_json({"channels": views})
        return 0
    if not views:
        print("no notification channels (vbm channel add, or notifications.channels; see the README)")
    for v in views:
        print(
            f"{v['name']:<16} {v['type']:<8} on {','.join(v['on']):<24} level {v['level']:<8}"
            f" scope {v['scope']:<5} {v['endpoint']}"
        )
    return 0


def _test(args: argparse.Namespace, settings: Settings) -> int:
    from shared.notify.channels import send_test, tested

    out = sys.stderr if args.json else sys.stdout
    if not settings.notifications.channels:
        print(
            "vbm notify test: no notification channels (vbm channel add, or notifications.channels)", file=out
        )
        return 2
    try:
        results = asyncio.run(send_test(settings.notifications, utcnow(), args.channel))
    except KeyError:
        known = ", ".join(c.name for c in settings.notifications.channels)
        print(f"vbm notify test: no channel named {args.channel!r} (channels: {known})", file=out)
        return 2
    answer = tested(results)
    if args.json:
        _print_json(answer)
    else:
        for r in results:
            print(f"{r['channel']}: " + ("sent" if r["ok"] else f"FAILED: {r['error']}"))
    return 0 if answer["ok"] else 1
