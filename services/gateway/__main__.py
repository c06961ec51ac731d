"""The gateway: the REST API (and later the web UI) in front of the database and the bus."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.gateway.api_metrics import scrape_registry
from services.gateway.app import create_app
from shared.observe.exposition import serve_port
from shared.runtime.service import Context, Parts, main
from shared.runtime.supervisor import CERT_PREFIX, LISTEN_PREFIX
from shared.runtime.tls import HSTS, server_tls
from shared.vsphere.pool import sync_rows

log = logging.getLogger(__name__)


async def strict_transport(_request: web.Request, response: web.StreamResponse) -> None:
    """HSTS on every answer served over TLS (never on plain HTTP: the gateway serves one or the other)."""
    response.headers["Strict-Transport-Security"] = HSTS


async def wire(ctx: Context) -> Parts:
    def sync() -> None:
        with ctx.sessions.begin() as s:
            sync_rows(s, ctx.settings, ctx.clock())

    await asyncio.to_thread(sync)
    gw = ctx.settings.gateway
    served = await asyncio.to_thread(server_tls, gw, ctx.settings.data_dir)
    app = create_app(ctx)
    if served is not None:
        app.on_response_prepare.append(strict_transport)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, gw.host, gw.port, ssl_context=served.context if served else None)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else gw.port
    if served is not None:
        made = "self-signed, clients trust this file" if served.generated else "configured"
        log.info("serving HTTPS with %s (%s), SHA-256 fingerprint %s", served.cert, made, served.fingerprint)
        print(f"{CERT_PREFIX}{served.cert} ({made}) SHA-256 {served.fingerprint}", flush=True)
    # One machine-readable line: `vbm up` and the tests read the scheme and the real port from it.
    print(f"{LISTEN_PREFIX}{'https' if served else 'http'}://{gw.host}:{port}", flush=True)

    stops = [runner.cleanup]
    metrics = ctx.settings.metrics
    if metrics.port:  # everything /metrics shows, without a key, on a port of a private network
        endpoint = await asyncio.to_thread(serve_port, metrics.host, metrics.port, scrape_registry(ctx))
        log.info("metrics at http://%s:%d/metrics", metrics.host, endpoint.port)
        stops.append(lambda: asyncio.to_thread(endpoint.close))

    async def serve_until_stop() -> None:
        await ctx.stop.wait()

    return Parts(tasks=[serve_until_stop], on_stop=stops)


if __name__ == "__main__":
    main("gateway", wire)
