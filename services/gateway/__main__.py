"""The gateway: the REST API (and later the web UI) in front of the database and the bus."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.gateway.app import create_app
from shared.runtime.service import Context, Parts, main
from shared.vsphere.pool import sync_rows

log = logging.getLogger(__name__)


async def wire(ctx: Context) -> Parts:
    def sync() -> None:
        with ctx.sessions.begin() as s:
            sync_rows(s, ctx.settings, ctx.clock())

    await asyncio.to_thread(sync)
    runner = web.AppRunner(create_app(ctx), access_log=None, handle_signals=False)
    await runner.setup()
    gw = ctx.settings.gateway
    site = web.TCPSite(runner, gw.host, gw.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else gw.port
    # One machine-readable line: `vbm up` and the tests read the real port from it.
    print(f"vbm gateway listening on http://{gw.host}:{port}", flush=True)

    async def serve_until_stop() -> None:
        await ctx.stop.wait()

    return Parts(tasks=[serve_until_stop], on_stop=[runner.cleanup])


if __name__ == "__main__":
    main("gateway", wire)
