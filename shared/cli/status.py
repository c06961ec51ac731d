"""`vbm status`: the services seen on the bus, with their last heartbeat, and those missing; what
GET /api/v1/services answers, found the way the gateway finds it, but without a gateway.

It connects to NATS (the settings' `nats`), asks every service to beat now (PING_SUBJECT: each
answers at once) and listens to the heartbeats for 1.5 heartbeat intervals, or less once every
service of vbm was heard. The exit status says whether anything is missing (1), so that a script
or a monitoring check can use it; 2 when NATS cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from shared.clock import utcnow
from shared.contracts import HEARTBEAT_WILDCARD, PING_SUBJECT, ServiceHeartbeat
from shared.runtime.status import Presence
from shared.settings import Settings

COMMANDS = ("status",)
SETTLE = 0.5  # after the ping: the replies of every instance arrive together


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "status", help="the services on the bus and their last heartbeat; exit 1 if one is missing"
    )
    p.add_argument("--json", action="store_true", help="what GET /api/v1/services answers, as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.nats.server_url()
    try:
        presence = asyncio.run(listen(url, settings.heartbeat_interval, settings.nats.connect_timeout))
    except Unreachable as exc:
        hint = "is vbm running (`vbm up`)? else set VBM_NATS__URL"
        print(f"vbm status: cannot reach NATS at {url} ({exc}): {hint}", file=sys.stderr)
        return 2
    answer = presence.answer(utcnow())
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        _print(answer)
    return 1 if answer["missing"] else 0


class Unreachable(Exception):
    pass


async def listen(url: str, interval: float, timeout: float) -> Presence:
    """The heartbeats heard on `url` in 1.5 intervals after a ping (sooner when none is missing)."""
    nc = await _connect([u.strip() for u in url.split(",") if u.strip()], timeout)
    presence = Presence(interval=interval)
    everyone = asyncio.Event()

    async def on_beat(msg: Any) -> None:
        with contextlib.suppress(ValueError):  # not a heartbeat of this version: not counted
            presence.see(ServiceHeartbeat.model_validate_json(msg.data))
            if not presence.answer(utcnow())["missing"]:
                everyone.set()

    try:
        await nc.subscribe(HEARTBEAT_WILDCARD, cb=on_beat)
        await nc.publish(PING_SUBJECT, b"")
        await nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everyone.wait(), 1.5 * interval)
            await asyncio.sleep(SETTLE)  # the other instances of a service (two movers) too
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
    return presence


async def _connect(urls: list[str], timeout: float) -> Any:
    """A connection, or Unreachable once every server refused (nats-py itself would go on
    trying its servers for minutes) or `timeout` passed."""
    import nats

    failures: list[BaseException] = []
    refused = asyncio.Event()

    async def note(exc: Exception) -> None:
        failures.append(exc)
        if len(failures) >= len(urls):
            refused.set()

    connecting = asyncio.ensure_future(
        nats.connect(urls, name="vbm-status", connect_timeout=min(2.0, timeout), error_cb=note)
    )
    given_up = asyncio.ensure_future(refused.wait())
    await asyncio.wait((connecting, given_up), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    given_up.cancel()
    if connecting.done() and connecting.exception() is None:
        return connecting.result()
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    last = failures[-1] if failures else None
    raise Unreachable(str(last or "") or (type(last).__name__ if last else f"no answer in {timeout:g} s"))


def _print(answer: dict[str, Any]) -> None:
    for row in answer["services"]:
        state = row["state"] if row["up"] else f"DOWN ({row['state']})"
        print(
            f"{row['service']:<12} {state:<10} {row['instance']:<28} pid {row['pid']:<7} {row['host']}"
            f"  v{row['version']}  last beat {row['age_s']} s ago"
        )
    missing = answer["missing"]
    print(f"missing: {', '.join(missing)}" if missing else "every service is up")
