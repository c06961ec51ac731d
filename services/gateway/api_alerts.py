"""/api/v1/alerts (list, acknowledge) and /api/v1/notifications (channels, deliveries, test)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.common import CTX, flag, in_session, json_response, query_int, read_json
from shared.catalog import channels as chstore
from shared.catalog.alerts import acknowledge, alert_view, list_alerts
from shared.catalog.listing import Window
from shared.errors import Invalid, NotFound
from shared.model.access import Permission
from shared.notify import channels as notify
from shared.notify.log import deliveries, delivery_view
from shared.settings import NotificationSettings

routes = web.RouteTableDef()


def _limit(request: web.Request, default: int) -> int:
    return query_int(request, "limit", default, 1, 1000)


@routes.get("/api/v1/alerts")
@needs(Permission.ALERTS_READ)
async def get_alerts(request: web.Request) -> web.Response:
    """Open alerts (`all=true`: acknowledged too), newest first (`order=asc`), by `severity`,
    `kind`, `vm`, `since`/`until`; paged by `limit` (default 100) and `offset` or `cursor`."""
    q = request.query
    window = Window.parse(q, ("all", "severity", "kind", "vm"), default_limit=100, max_limit=1000)
    everything = flag(request, "all")

    def work(s: Session) -> dict[str, Any]:
        found = list_alerts(
            s, window, everything=everything, severity=q.get("severity"), kind=q.get("kind"), vm=q.get("vm")
        )
        return found.answer("alerts", [alert_view(a) for a in found.rows], window)

    return json_response(await in_session(request, work))


@routes.post("/api/v1/alerts/{alert_id}/ack")
@needs(Permission.ALERTS_ACK)
async def ack_alert(request: web.Request) -> web.Response:
    alert_id, now = request.match_info["alert_id"], request.app[CTX].clock()

    def work(s: Session) -> dict[str, object]:
        alert = acknowledge(s, alert_id, now)
        if alert is None:
            raise NotFound(f"no alert {alert_id!r}")
        return alert_view(alert)

    return json_response(await in_session(request, work, write=True))


@routes.get("/api/v1/notifications")
@needs(Permission.NOTIFICATIONS_READ)
async def get_notifications(request: web.Request) -> web.Response:
    ctx, limit = request.app[CTX], _limit(request, 50)
    settings = await in_session(request, lambda s: chstore.effective(s, ctx.settings))
    rows = await in_session(request, lambda s: [delivery_view(r) for r in deliveries(s, limit)])
    channels = [notify.channel_view(c, settings) for c in settings.channels]
    return json_response({"channels": channels, "deliveries": rows})


@routes.post("/api/v1/notifications/test")
@needs(Permission.NOTIFICATIONS_WRITE)
async def test_notifications(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await read_json(request) if request.can_read_body else {}
    name = body.get("channel") if isinstance(body, dict) else None
    if name is not None and not isinstance(name, str):
        raise Invalid("channel", "must be a channel's name")

    def effective(s: Session) -> NotificationSettings:
        _, broken = chstore.usable(s, ctx.settings)
        if name in broken:  # says what cannot be decrypted and how to fix it
            raise broken[name]
        return chstore.effective(s, ctx.settings)

    settings = await in_session(request, effective)
    try:
        results = await notify.send_test(settings, ctx.clock(), name)
    except KeyError:
        known = ", ".join(c.name for c in settings.channels) or "none configured or added"
        raise Invalid("channel", f"no notification channel named {name!r} (channels: {known})") from None
    return json_response({"results": results, "ok": all(r["ok"] for r in results)})
