"""`GET /metrics`: Prometheus' scrape of vbm (docs/design.md, "Metrics").

It names jobs, VMs, vCenters and repositories, so by default it needs an identity like any read:
an API key whose role holds `metrics:read` (every role does; make one for Prometheus with
`vbm apikey create prometheus --role viewer`), sent as `Authorization: Bearer <key>` (what
Prometheus' `authorization:` sends) or `X-API-Key`. With `metrics.public` it answers anyone, as
/healthz does: for a gateway that only a private network reaches. `create_app` routes one of the
two handlers, so the route table (and tests/gateway/test_access.py) shows which applies.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from aiohttp import web
from prometheus_client import CollectorRegistry

from services.gateway.access import needs
from services.gateway.apidoc import op
from services.gateway.common import CTX
from shared.model.access import PUBLIC, Permission
from shared.observe.catalog import CatalogCollector
from shared.observe.exposition import CONTENT_TYPE, multiproc_dir, registry, render
from shared.runtime.service import Context

SCRAPE = web.AppKey("metrics", list[CollectorRegistry])
WHY = "read by Prometheus, not by people: see README, Monitoring"
SUMMARY = "Prometheus metrics (text exposition format): this gateway's, or under `vbm up` every service's"


def scrape_registry(ctx: Context) -> CollectorRegistry:
    """What `/metrics` shows: this process's counters (under `vbm up`, every service's) and the
    catalog's gauges."""
    names = [vc.name for vc in ctx.settings.vcenters]
    alive = timedelta(seconds=3 * ctx.settings.heartbeat_interval)
    return registry(multiproc_dir(), [CatalogCollector(ctx.sessions, ctx.clock, names, alive)])


async def _scrape(request: web.Request) -> web.Response:
    made = request.app[SCRAPE]
    if not made:  # made on first use, not with the app (its tests build it without a database)
        made.append(scrape_registry(request.app[CTX]))
    body = await asyncio.to_thread(render, made[0])  # the catalog's gauges query the database
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@needs(Permission.METRICS_READ)
@op(SUMMARY, media="text/plain", no_cli=WHY)
async def metrics(request: web.Request) -> web.Response:
    return await _scrape(request)


@needs(PUBLIC)
@op(SUMMARY + " (metrics.public: no key needed)", media="text/plain", no_cli=WHY)
async def public_metrics(request: web.Request) -> web.Response:
    return await _scrape(request)


def install(app: web.Application, public: bool) -> None:
    app[SCRAPE] = []
    app.router.add_get("/metrics", public_metrics if public else metrics)
