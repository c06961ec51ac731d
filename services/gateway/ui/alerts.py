"""Alerts (open by default, all with a filter; acknowledge) and the notifications log (the
deliveries, the channels, "Send test" per channel), through the same catalog functions as
GET /api/v1/alerts, POST /api/v1/alerts/{id}/ack, GET /api/v1/notifications and
POST /api/v1/notifications/test (services/gateway/api_alerts.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.api_alerts import SEVERITIES, send_test
from services.gateway.common import CTX, flag, in_session
from services.gateway.ui.render import page, render, safe_next
from shared.catalog import alerts, overview
from shared.catalog import channels as chstore
from shared.catalog.listing import Window
from shared.errors import Invalid, NotFound
from shared.model.access import Permission
from shared.notify import channels as notify
from shared.notify import log as notify_log

routes = web.RouteTableDef()

PAGE_SIZE = 50
TEST_SECONDS = 9.0  # "Send test" answers within 10 s (docs/ui.md, statement 11)


def _links(request: web.Request, window: Window, total: int, path: str) -> dict[str, str | None]:
    """Previous and next pages: the same query with another offset."""
    kept = {k: v for k, v in request.query.items() if k not in ("offset", "cursor") and v != ""}

    def at(offset: int) -> str:
        return path + "?" + urlencode({**kept, **({"offset": offset} if offset else {})})

    return {
        "prev": at(max(0, window.offset - window.limit)) if window.offset else None,
        "next": at(window.offset + window.limit) if window.offset + window.limit < total else None,
    }


@routes.get("/alerts")
@needs(Permission.ALERTS_READ)
@page
async def alerts_page(request: web.Request) -> web.Response:
    q = request.query
    window = Window.parse(q, alerts.FILTERS, default_limit=PAGE_SIZE, max_limit=500)
    if window.after is not None:
        raise Invalid("cursor", "this page pages by offset", where="query")
    everything = flag(request, "all")
    severity = q.get("severity") or None
    if severity and severity not in SEVERITIES:
        raise Invalid("severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}", where="query")

    def work(s: Session) -> dict[str, Any]:
        return alerts.alerts_page(
            s,
            window,
            everything=everything,
            severity=severity,
            kind=q.get("kind") or None,
            vm=q.get("vm") or None,
        )

    found = await in_session(request, work)
    return render(
        request,
        "alerts/alerts.html",
        found=found,
        everything=everything,
        severity=severity or "",
        kind=q.get("kind", ""),
        vm=q.get("vm", ""),
        severities=SEVERITIES,
        pages=_links(request, window, found["total"], "/alerts"),
        back=request.path_qs,
    )


@routes.post("/alerts/{alert_id}/ack")
@needs(Permission.ALERTS_ACK)
@page
async def ack_alert(request: web.Request) -> web.Response:
    """Acknowledge (as POST /api/v1/alerts/{id}/ack): htmx gets the alert's item, gone from an
    open list; a plain form goes back to the page it came from."""
    alert_id, now = request.match_info["alert_id"], request.app[CTX].clock()
    form = await request.post()

    def work(s: Session) -> dict[str, object]:
        alert = alerts.acknowledge(s, alert_id, now)
        if alert is None:
            raise NotFound(f"no alert {alert_id!r}")
        return alerts.alert_view(alert)

    seen = await in_session(request, work, write=True)
    target = form.get("next")
    if request.headers.get("HX-Request") != "true":
        raise web.HTTPSeeOther(safe_next(target if isinstance(target, str) else "/alerts"))
    if form.get("list") == "dashboard":  # the dashboard's list and count, afresh
        found = await in_session(request, overview.open_alerts)
        return render(request, "dashboard/alerts.html", alerts=found, back="/dashboard", oob=True)
    if form.get("list") == "all":  # a list of every alert keeps it, acknowledged
        return render(request, "alerts/item.html", a=seen, back=safe_next(str(target)), everything=True)
    return web.Response(text="", content_type="text/html")  # an open list loses it


async def _notifications(request: web.Request) -> tuple[dict[str, Any], Window]:
    """The channels and a page of deliveries, as GET /api/v1/notifications answers them."""
    ctx, q = request.app[CTX], request.query
    window = Window.parse(q, notify_log.FILTERS, default_limit=PAGE_SIZE)
    if window.after is not None:
        raise Invalid("cursor", "this page pages by offset", where="query")

    def work(s: Session) -> dict[str, Any]:
        log = notify_log.deliveries(s, window, q)
        return {"channels": notify.channels_view(chstore.effective(s, ctx.settings)), **log}

    return await in_session(request, work), window


@routes.get("/notifications")
@needs(Permission.NOTIFICATIONS_READ)
@page
async def notifications_page(request: web.Request) -> web.Response:
    found, window = await _notifications(request)
    return _log_page(request, found, window, tried={})


def _log_page(
    request: web.Request, found: dict[str, Any], window: Window, tried: dict[str, Any], status: int = 200
) -> web.Response:
    q = request.query
    return render(
        request,
        "alerts/notifications.html",
        status,
        found=found,
        channel=q.get("channel", ""),
        state=q.get("state", ""),
        states=notify_log.STATES,
        pages=_links(request, window, found["total"], "/notifications"),
        tried=tried,
    )


async def tested_one(request: web.Request) -> dict[str, Any]:
    """The result of a test message over the channel a form names (this page's and the
    notification settings' "Send test"), within TEST_SECONDS."""
    form = await request.post()
    name = form.get("channel")
    if not isinstance(name, str) or not name.strip():
        raise Invalid("channel", "Choose the channel to test")
    results = await send_test(request, name.strip(), timeout=TEST_SECONDS)
    return results[0] if results else {"channel": name, "ok": False, "error": "nothing sent"}


@routes.post("/notifications/test")
@needs(Permission.NOTIFICATIONS_WRITE)
@page
async def test_channel(request: web.Request) -> web.Response:
    """Send a test over one channel (as POST /api/v1/notifications/test): htmx gets the result
    as a fragment beside the button; a plain form gets the page with the result in place."""
    result = await tested_one(request)
    if request.headers.get("HX-Request") == "true":
        return render(request, "alerts/tested.html", r=result)
    found, window = await _notifications(request)
    return _log_page(request, found, window, tried={str(result["channel"]): result})
