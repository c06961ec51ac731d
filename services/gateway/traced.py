"""The gateway's spans: a request that changes something (a run, a restore, a verify asked
for) starts a trace, or continues the caller's when it sends a `traceparent` header; the work it
stages in the outbox carries the trace on (docs/design.md, "Traces")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.gateway.audit import CHANGES
from shared.observe import tracing


@web.middleware
async def traced(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method not in CHANGES:
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "(no route)"  # a template: no ids
    with tracing.span(
        f"{request.method} {route}",
        parent=request.headers,
        kind=SpanKind.SERVER,
        attrs={"http.request.method": request.method, "http.route": route},
    ) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return response
