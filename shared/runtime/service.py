"""How every vbm service process runs: wire, serve, and stop cleanly on SIGTERM/SIGINT.

A service module provides `wire(ctx) -> Parts`: the consumers it runs and its background tasks.
`serve()` does the rest, the same way for all of them: read settings, set up logging, bring the
database schema up to date, connect to NATS and declare the stream, announce the instance
(a row in `service_instances` and a heartbeat on `vbm.live.heartbeat.<service>`), run the outbox
relay (every service publishes the events it staged), run until a signal, then stop: stop
fetching, let the message in hand finish, drain NATS, record the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared import __version__
from shared.clock import Clock, utcnow
from shared.contracts import PING_SUBJECT, ServiceHeartbeat, heartbeat_subject
from shared.db import ServiceInstance, make_engine, make_sessionmaker
from shared.db.migrate import SchemaNotCurrent, check_current, upgrade
from shared.observe import logs, tracing
from shared.observe.exposition import serve_process
from shared.runtime.bus import Bus, BusUnavailable, Consumer, run_consumer
from shared.runtime.outbox import Relay
from shared.runtime.runfields import run_fields
from shared.settings import ConfigError, Settings, load_settings, unknown_variables

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What wiring functions get: built once per process, never at import time."""

    service: str
    instance: str
    settings: Settings
    bus: Bus
    engine: Engine
    sessions: sessionmaker[Session]
    stop: asyncio.Event
    relay: Relay
    clock: Clock = utcnow


@dataclass
class Parts:
    """What a service runs: bus consumers and long-running tasks (each gets the stop event)."""

    consumers: Sequence[Consumer[Any]] = ()
    tasks: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    on_stop: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=list)
    capacity: int = 0  # a mover's disk streams: what the dispatcher may give it at once


Wiring = Callable[[Context], Awaitable[Parts]]


def setup_logging(level: str, service: str, fmt: str | None = None) -> None:
    """Every line as JSON or readable text (`VBM_LOG_FORMAT`; shared/observe/logs.py)."""
    logs.configure(level, service, fmt)


def main(service: str, wire: Wiring) -> None:
    """Entry point of `python -m services.<service>`. Exit codes: 0 clean stop, 2 bad config,
    3 a dependency (NATS, database) unavailable."""
    os.umask(0o077)  # the database, repositories, keys: every file this process makes is private
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(settings.log_level, service, settings.log_format)
    for name in unknown_variables():
        log.warning("%s configures nothing (a typo?); see `vbm config`", name)
    flush_traces = tracing.setup(service, settings.otel.endpoint, settings.otel.sample_ratio)
    try:
        asyncio.run(serve(service, wire, settings))
    except (BusUnavailable, SchemaNotCurrent) as exc:
        log.error("%s cannot start: %s", service, exc)
        raise SystemExit(3) from None
    except ConfigError as exc:  # found at start, e.g. a TLS certificate that does not load
        log.error("%s: %s", service, exc)
        raise SystemExit(2) from None
    finally:
        if flush_traces is not None:
            flush_traces()  # the spans still queued are sent before the process ends


async def serve(service: str, wire: Wiring, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    engine = make_engine(settings.db_url)
    if settings.auto_migrate:
        await asyncio.to_thread(upgrade, engine)
    else:
        await asyncio.to_thread(check_current, engine)
    instance = f"{service}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    bus = await Bus.connect(settings.nats.server_url(), instance, timeout=settings.nats.connect_timeout)
    sessions = make_sessionmaker(engine)
    ctx = Context(
        service=service,
        instance=instance,
        settings=settings,
        bus=bus,
        engine=engine,
        sessions=sessions,
        stop=stop,
        relay=Relay(bus, sessions, utcnow),
    )
    started = ctx.clock()
    endpoint = None
    try:
        endpoint = serve_process(service, settings.metrics.host, settings.metrics.port)
        await bus.ensure_stream(settings.nats.stream_replicas)
        parts = await wire(ctx)
        await asyncio.to_thread(_record_start, ctx, started)
        fields = functools.partial(run_fields, sessions)  # a run's job and VM on its log lines
        workers = [asyncio.create_task(run_consumer(bus, c, stop, fields)) for c in parts.consumers]
        workers += [asyncio.create_task(t()) for t in parts.tasks]
        workers.append(asyncio.create_task(ctx.relay.run(stop)))
        beat = asyncio.create_task(_heartbeats(ctx, started, parts.capacity))
        log.info("%s ready (instance %s, nats %s)", service, instance, settings.nats.server_url())
        await _wait_stop_or_crash(stop, workers)
        log.info("%s stopping", service)
        await _beat(ctx, started, "stopping")
        beat.cancel()
        if workers:
            _, pending = await asyncio.wait(workers, timeout=settings.shutdown_grace)
            for task in pending:
                task.cancel()
        await asyncio.gather(*workers, beat, return_exceptions=True)
        for hook in parts.on_stop:
            await hook()
        await asyncio.to_thread(_record_stop, ctx)
    finally:
        if endpoint is not None:
            endpoint.close()
        await bus.close()
        engine.dispose()
    log.info("%s stopped", service)


async def _wait_stop_or_crash(stop: asyncio.Event, workers: list[asyncio.Task[Any]]) -> None:
    """Return on a stop signal; if a worker fails first, log it and stop the whole service.

    A worker that simply finishes (a one-off task such as a start-up sweep) is not a failure.
    """
    stopper = asyncio.create_task(stop.wait())
    running: set[asyncio.Task[Any]] = set(workers)
    while not stop.is_set():
        done, _ = await asyncio.wait([stopper, *running], return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopper}:
            running.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("worker failed, stopping service", exc_info=task.exception())
                stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await stopper


async def _heartbeats(ctx: Context, started: datetime, capacity: int) -> None:
    async def answer_ping(_msg: object) -> None:
        await _beat(ctx, started, "ready")

    await ctx.bus.nc.subscribe(PING_SUBJECT, cb=answer_ping)
    while True:
        await _beat(ctx, started, "ready")
        try:  # the database's view of who is alive (the dispatcher counts the movers' streams)
            await asyncio.to_thread(_record_seen, ctx, capacity)
        except Exception as exc:
            log.warning("could not record this instance's heartbeat: %s", exc)
        await asyncio.sleep(ctx.settings.heartbeat_interval)


def _record_seen(ctx: Context, capacity: int) -> None:
    with ctx.sessions.begin() as session:
        row = session.get(ServiceInstance, ctx.instance)
        if row is not None:
            row.seen_at, row.capacity = ctx.clock(), capacity


async def _beat(ctx: Context, started: datetime, state: Literal["starting", "ready", "stopping"]) -> None:
    payload = ServiceHeartbeat(
        service=ctx.service,
        instance=ctx.instance,
        pid=os.getpid(),
        host=socket.gethostname(),
        version=__version__,
        started_at=started,
        sent_at=ctx.clock(),
        state=state,
    )
    with contextlib.suppress(Exception):
        await ctx.bus.publish_live(heartbeat_subject(ctx.service), payload)


def _record_start(ctx: Context, started: datetime) -> None:
    with ctx.sessions.begin() as session:
        session.add(
            ServiceInstance(
                instance=ctx.instance,
                service=ctx.service,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                started_at=started,
                state="running",
            )
        )


def _record_stop(ctx: Context) -> None:
    with ctx.sessions.begin() as session:
        row = session.get(ServiceInstance, ctx.instance)
        if row is not None:
            row.state = "stopped"
            row.stopped_at = ctx.clock()
            row.capacity = 0


__all__ = ["ConfigError", "Context", "Parts", "main", "serve"]
