"""The dashboard: is everything protected? What runs now, what failed in the last 24 hours,
open alerts, the services, and the snapshots vbm holds open (0 when idle: the no-leak promise)."""

from __future__ import annotations

from aiohttp import web

from services.gateway.access import needs
from services.gateway.common import CTX, PRESENCE
from services.gateway.ui.render import page, render
from shared.model.access import Permission

routes = web.RouteTableDef()


@routes.get("/dashboard")
@needs(Permission.STATUS_READ)
@page
async def dashboard(request: web.Request) -> web.Response:
    status = request.app[PRESENCE].answer(request.app[CTX].clock())
    return render(request, "dashboard.html", status=status)
