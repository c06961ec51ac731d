"""The gateway's HTTP app: health, readiness and the REST API under /api/v1 (see docs/api.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import text

from services.gateway import (
    api_alerts,
    api_events,
    api_jobs,
    api_manifest,
    api_metrics,
    api_mounts,
    api_people,
    api_restores,
    api_retention,
    api_runs,
    api_session,
    api_settings,
    api_vcenters,
    api_vms,
    audit,
    openapi,
    ui,
)
from services.gateway.access import needs
from services.gateway.answers.service import About, Health, Ready, Services, Where
from services.gateway.apidoc import op
from services.gateway.auth import AUTH, AuthState, authorize
from services.gateway.common import CTX, PRESENCE, check_parameters, field_error, json_response, problem
from services.gateway.traced import traced
from services.gateway.ui.render import html_errors
from shared import __version__
from shared.contracts import HEARTBEAT_WILDCARD, PING_SUBJECT, ServiceHeartbeat
from shared.errors import Invalid, StoreError
from shared.model.access import PUBLIC, Permission
from shared.runtime.service import Context
from shared.runtime.status import NAME, Presence, about

log = logging.getLogger(__name__)

__all__ = ["CTX", "PRESENCE", "create_app", "json_response", "problem"]

MAX_BODY = 1024 * 1024  # no request body vbm takes is near this
KEPT_HEADERS = (
    "Retry-After",
    "Allow",
    "Content-Range",
    "ETag",
)  # what an error's own headers tell the client


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error is JSON that says what was wrong; nothing leaks a stack trace."""
    try:
        check_parameters(request)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # a redirect is an answer, not an error
        answer = problem(exc.status, exc.reason, _detail(request, exc))
        for name in KEPT_HEADERS:
            if name in exc.headers:
                answer.headers[name] = exc.headers[name]
        return answer
    except Invalid as exc:
        where = exc.where or _location(request, exc.field)
        return problem(exc.status, exc.title, str(exc), [field_error(exc.field, where, exc.message)])
    except StoreError as exc:
        return problem(exc.status, exc.title, str(exc))
    except ValidationError as exc:
        found = [
            field_error(".".join(str(p) for p in err["loc"]) or "(body)", "body", err["msg"])
            for err in exc.errors()
        ]
        return problem(422, "Unprocessable Entity", f"{found[0]['field']}: {found[0]['detail']}", found)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "see the gateway's log")


def _location(request: web.Request, field: str) -> str:
    """Where an invalid field came from: a query parameter, a path parameter, else the body."""
    name = field.split(".", 1)[0]
    if name in request.query:
        return "query"
    if name in request.match_info:
        return "path"
    return "body"


def _detail(request: web.Request, exc: web.HTTPException) -> str:
    """What went wrong, in words: the router's own 404/405/413 say only their status."""
    where = f"{request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {request.path} (allowed: {allowed})"
    if isinstance(exc, web.HTTPNotFound) and request.match_info.http_exception is not None:
        return f"no such path: {where} (the REST API is under /api/v1; see docs/api.md)"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"the body of {where} is larger than {MAX_BODY // 1024} KiB"
    text = exc.text or ""
    return text if text and text != f"{exc.status}: {exc.reason}" else f"{exc.reason}: {where}"


@needs(PUBLIC)
@op(
    "Where things are, for a client (a browser asking for text/html is sent to the web UI: 303)",
    answer=Where,
    no_cli="see `vbm --help`",
)
async def root(request: web.Request) -> web.Response:
    """`/`: where things are, for a client (JSON, no key needed); a browser goes to the web UI."""
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPSeeOther("/dashboard")  # the login page first when nobody is logged in
    return json_response(
        {
            "name": NAME,
            "version": __version__,
            "api": "/api/v1",
            "health": "/healthz",
            "docs": "/api/v1/docs",
            "openapi": "/api/v1/openapi.json",
            "ui": "/dashboard",
        }
    )


@needs(PUBLIC)
@op("Liveness: the gateway answers", answer=Health, no_cli="a probe for a load balancer or an orchestrator")
async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@needs(PUBLIC)
@op(
    "Readiness: NATS connected and the database answering (503 names what is not)",
    answer=Ready,
    errors=(503,),
    no_cli="a probe for a load balancer or an orchestrator",
)
async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    problems: list[str] = []
    if not ctx.bus.nc.is_connected:
        problems.append("NATS is not connected")
    try:
        await asyncio.to_thread(_ping_db, ctx)
    except Exception as exc:
        problems.append(f"database unreachable: {exc}")
    if problems:
        # a problem like every error (RFC 9457), its `problems` member listing each one
        return problem(503, "Service Unavailable", "; ".join(problems), extra={"problems": problems})
    return json_response({"status": "ready"})


def _ping_db(ctx: Context) -> None:
    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@needs(PUBLIC)
@op("The API's name and version", answer=About, cli="vbm version --json")
async def api_root(_request: web.Request) -> web.Response:
    return json_response(about())


@needs(Permission.STATUS_READ)
@op(
    "The services seen on the bus, with their last heartbeat, and those missing",
    answer=Services,
    cli="vbm status --json",
)
async def api_services(request: web.Request) -> web.Response:
    return json_response(request.app[PRESENCE].answer(request.app[CTX].clock()))


async def _follow_heartbeats(app: web.Application) -> AsyncIterator[None]:
    ctx, presence = app[CTX], app[PRESENCE]

    async def on_beat(msg: object) -> None:
        with contextlib.suppress(ValidationError):
            presence.see(ServiceHeartbeat.model_validate_json(msg.data))  # type: ignore[attr-defined]

    sub = await ctx.bus.nc.subscribe(HEARTBEAT_WILDCARD, cb=on_beat)
    await ctx.bus.nc.publish(PING_SUBJECT, b"")
    yield
    with contextlib.suppress(Exception):
        await sub.unsubscribe()


def create_app(ctx: Context) -> web.Application:
    app = web.Application(
        middlewares=[traced, html_errors, errors, audit.audit_trail, authorize], client_max_size=MAX_BODY
    )
    app[CTX] = ctx
    app.on_response_prepare.append(audit.tag_response)
    app[AUTH] = AuthState()
    app[PRESENCE] = Presence(interval=ctx.settings.heartbeat_interval)
    app.cleanup_ctx.append(_follow_heartbeats)
    app.cleanup_ctx.append(api_vms.vcenter_sessions)
    app.cleanup_ctx.append(api_events.live_hub)
    app.cleanup_ctx.append(api_mounts.remount)
    app.router.add_get("/", root)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1", api_root)
    app.router.add_get("/api/v1/services", api_services)
    for module in (
        api_jobs,
        api_runs,
        api_retention,
        api_manifest,
        api_vms,
        api_vcenters,
        api_settings,
        api_mounts,
        api_restores,
        api_alerts,
        api_events,
        api_people,
        api_session,
        audit,
        openapi,
    ):
        app.router.add_routes(module.routes)
    ui.install(app)
    api_metrics.install(app, ctx.settings.metrics.public)
    return app
