"""GET /api/v1/events: live events as Server-Sent Events (docs/api.md, "Live events"), by hand on
aiohttp's StreamResponse. Fed by the gateway's one fan-out (services/gateway/live.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from services.gateway.access import identity_of, needs
from services.gateway.apidoc import Param, op, text
from services.gateway.common import CTX
from services.gateway.live import Client, Hub
from shared.errors import Invalid
from shared.model.access import Permission
from shared.model.live import FAMILIES, BadQuery, Filter

routes = web.RouteTableDef()

HUB = web.AppKey("live_hub", Hub)
RETRY_MS = 3000  # how soon a browser's EventSource reconnects
HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(event_type: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One SSE event; progress and control events have no id, so a reconnect resumes after the
    last state change."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event_type}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _last_id(request: web.Request) -> int | None:
    for name, raw in (
        ("Last-Event-ID", request.headers.get("Last-Event-ID")),
        ("last_event_id", request.query.get("last_event_id")),
    ):
        if raw is None or not raw.strip():
            continue
        if not raw.strip().isdigit() or len(raw.strip()) > 18:
            where = "header" if name == "Last-Event-ID" else "query"
            raise Invalid(
                name, f"{raw[:40]!r} is not an event id (a whole number from an event's `id`)", where=where
            )
        return int(raw.strip())
    return None


EVENT_ID = {"type": "string", "pattern": "^[0-9]{1,18}$"}
QUERY = (
    text("run", "only about these runs (their ids: repeat, or separate with commas)"),
    text("job", "only about these jobs' runs (their ids: repeat, or separate with commas)"),
    text("restore", "only about these restores (their ids: repeat, or separate with commas)"),
    text("type", f"only these kinds: {', '.join(FAMILIES)} (repeat, or separate with commas)"),
    Param("last_event_id", "resume after this event id (as the Last-Event-ID header does)", EVENT_ID),
    Param(
        "Last-Event-ID",
        "resume after this event id: a reconnecting EventSource sends the id of the last event it got",
        EVENT_ID,
        where="header",
    ),
)


@routes.get("/api/v1/events")
@needs(Permission.RUNS_READ)
@op(
    "Live events (Server-Sent Events): state changes with ids, progress samples, alerts",
    query=QUERY,
    media="text/event-stream",
    cli="vbm events --json",
)
async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: state changes (with ids), progress samples, alerts; see docs/api.md."""
    known = {"run", "job", "restore", "type", "last_event_id"}
    unknown = sorted(set(request.query) - known)
    if unknown:
        raise Invalid(unknown[0], f"unknown parameter: one of {', '.join(sorted(known))}")
    try:
        wanted = Filter.parse({k: request.query.getall(k, []) for k in ("run", "job", "restore", "type")})
    except BadQuery as exc:
        raise Invalid(exc.field, str(exc).split(": ", 1)[1]) from None
    last_id = _last_id(request)
    identity = identity_of(request)
    if identity is None:
        raise web.HTTPUnauthorized(text="live events need a session or an API key")
    if request.method == "HEAD":  # the headers a GET would have, without opening a stream
        return web.Response(headers=HEADERS)
    hub = request.app[HUB]
    settings = request.app[CTX].settings.gateway
    client, resume = await hub.subscribe(wanted, identity.role, last_id)
    try:
        response = web.StreamResponse(headers=HEADERS)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client went away: nothing to answer
            await response.write(f"retry: {RETRY_MS}\n: connected\n\n".encode())
            sent = last_id or 0
            if resume.reset is not None:
                await response.write(frame("reset", {"type": "reset", "reason": resume.reset}))
            for event in resume.backlog:
                await response.write(frame(event["type"], event, event["id"]))
                sent = event["id"]
            await _follow(response, client, sent, settings.events_heartbeat)
        return response
    finally:
        hub.unsubscribe(client)


async def _follow(response: web.StreamResponse, client: Client, sent: int, heartbeat: float) -> None:
    while not client.closed:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.wake.wait(), heartbeat)
        if not client.wake.is_set():
            await response.write(b": heartbeat\n\n")
            continue
        client.wake.clear()
        while not client.queue.empty():
            event = client.queue.get_nowait()
            if event["id"] > sent:  # the resume's backlog may hold it already
                await response.write(frame(event["type"], event, event["id"]))
                sent = event["id"]
        if client.dropped:
            reason = "this client read too slowly and is dropped: reconnect with Last-Event-ID"
            await response.write(frame("dropped", {"type": "dropped", "reason": reason, "last_id": sent}))
            return
        progress, client.progress = client.progress, {}
        for sample in progress.values():
            await response.write(frame("progress", sample))


async def live_hub(app: web.Application) -> AsyncIterator[None]:
    """The app's one fan-out, started by the first client and stopped with the app."""
    ctx = app[CTX]
    gateway = ctx.settings.gateway
    app[HUB] = Hub(ctx.sessions, ctx.clock, poll=gateway.events_poll, queue_size=gateway.events_queue)
    yield
    await app[HUB].close()
