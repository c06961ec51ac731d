"""`vbm alerts` (list, acknowledge) and `vbm notify` (test the channels, the delivery log)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from shared.clock import utcnow
from shared.settings import Settings

COMMANDS = ("alerts", "notify")


def add_parsers(sub: Any) -> None:
    a = sub.add_parser("alerts", help="alerts: list the open ones (or all), acknowledge")
    a_acts = a.add_subparsers(dest="alerts_command", metavar="ACTION")
    ls = a_acts.add_parser("ls", help="list alerts, newest first (the default action)")
    for parser in (a, ls):
        parser.add_argument("--all", action="store_true", help="acknowledged ones too")
        parser.add_argument("--limit", type=int, default=50)
    ack = a_acts.add_parser("ack", help="acknowledge alerts (they leave the open list)")
    ack.add_argument("alert_ids", nargs="+", metavar="ALERT_ID")
    n = sub.add_parser("notify", help="notification channels: send a test, show the delivery log")
    n_acts = n.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    test = n_acts.add_parser("test", help="send a test message over every channel (or one)")
    test.add_argument("channel", nargs="?", metavar="CHANNEL")
    log = n_acts.add_parser("log", help="recent deliveries: sent or failed, attempts, errors")
    log.add_argument("--limit", type=int, default=30)
    n_acts.add_parser("channels", help="the configured channels (without their secrets)")


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
    if args.command == "notify" and args.notify_command in ("channels", "test"):
        settings = with_stored(settings)
    if args.command == "notify" and args.notify_command == "channels":
        from shared.notify.channels import channel_view

        if not settings.notifications.channels:
            print("no notification channels (vbm channel add, or notifications.channels; see the README)")
        for c in settings.notifications.channels:
            v = channel_view(c, settings.notifications)
            print(
                f"{v['name']:<16} {v['type']:<8} on {','.join(v['on']):<24}"
                f" scope {v['scope']:<5} {v['endpoint']}"
            )
        return 0
    if args.command == "notify" and args.notify_command == "test":
        return _test(args, settings)
    from shared.db import make_sessionmaker
    from shared.db.existing import open_existing

    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        sessions = make_sessionmaker(engine)
        if args.command == "notify":
            from shared.notify.log import deliveries

            with sessions() as s:
                for row in deliveries(s, args.limit):
                    print(
                        f"{row.created_at:%Y-%m-%d %H:%M:%S} {row.state:<6} {row.channel:<16}"
                        f" x{row.attempts} {row.title}" + (f"\n    {row.error}" if row.error else "")
                    )
            return 0
        from shared.catalog.alerts import acknowledge, list_alerts
        from shared.catalog.listing import Window

        if args.alerts_command == "ack":
            missing = []
            with sessions.begin() as s:
                for alert_id in args.alert_ids:
                    if acknowledge(s, alert_id, utcnow()) is None:
                        missing.append(alert_id)
            for alert_id in missing:
                print(f"vbm alerts ack: no alert {alert_id!r} (see `vbm alerts --all`)")
            print(f"{len(args.alert_ids) - len(missing)} alert(s) acknowledged")
            return 1 if missing else 0
        with sessions() as s:
            found = list_alerts(
                s, Window.parse({"limit": str(args.limit)}, max_limit=1000), everything=args.all
            )
            total, rows = found.total, found.rows
            for a in rows:
                seen = " (acknowledged)" if a.acknowledged_at else ""
                print(
                    f"{a.created_at:%Y-%m-%d %H:%M:%S} {a.severity:<8} {a.id}  {a.kind}{seen}"
                    f"\n    {a.message}"
                )
        print(
            f"{total} {'alert(s)' if args.all else 'open alert(s)'}"
            + (f", {len(rows)} shown" if total > len(rows) else "")
        )
        return 0
    finally:
        engine.dispose()


def _test(args: argparse.Namespace, settings: Settings) -> int:
    from shared.notify.channels import send_test

    if not settings.notifications.channels:
        print("vbm notify test: no notification channels (vbm channel add, or notifications.channels)")
        return 2
    try:
        results = asyncio.run(send_test(settings.notifications, utcnow(), args.channel))
    except KeyError:
        known = ", ".join(c.name for c in settings.notifications.channels)
        print(f"vbm notify test: no channel named {args.channel!r} (channels: {known})")
        return 2
    for r in results:
        print(f"{r['channel']}: " + ("sent" if r["ok"] else f"FAILED: {r['error']}"))
    return 0 if all(r["ok"] for r in results) else 1
