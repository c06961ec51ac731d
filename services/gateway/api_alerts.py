"""/api/v1/alerts (list, acknowledge) and /api/v1/notifications (channels, deliveries, test)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.answers.alerts import Alert, AlertPage, Notifications, TestWhich, Tried
from services.gateway.apidoc import WINDOW, boolean, choice, number, op, text
from services.gateway.common import CTX, flag, in_session, json_response, read_json
from shared.catalog import alerts
from shared.catalog import channels as chstore
from shared.catalog.listing import Window
from shared.errors import Invalid, NotFound
from shared.model.access import Permission
from shared.notify import channels as notify
from shared.notify import log as notify_log
from shared.settings import NotificationSettings

routes = web.RouteTableDef()

SEVERITIES = ("info", "warning", "error", "critical")

ALERT_FILTERS = (
    boolean("all", "acknowledged alerts too"),
    choice("severity", "only of this severity", SEVERITIES),
    text("kind", "only of this kind, e.g. verify_failed"),
    text("vm", "only about this VM (its name)"),
)
DELIVERY_FILTERS = (
    text("channel", "only to this channel"),
    choice("state", "only pending, sent or failed ones", notify_log.STATES),
    text("outcome", "only about this outcome (success, warning, failure...)"),
    text("alert", "only the messages about this alert (its id)"),
)


@routes.get("/api/v1/alerts")
@needs(Permission.ALERTS_READ)
@op(
    "Alerts: the open ones, or all",
    # its own page size: up to 1000 alerts, 100 unless asked (the other lists: 500, 50)
    query=(number("limit", "rows in a page (default 100)", 1, 1000), *WINDOW[1:], *ALERT_FILTERS),
    answer=AlertPage,
    cli="vbm alerts ls --json",
)
async def get_alerts(request: web.Request) -> web.Response:
    """Open alerts (`all=true`: acknowledged too), newest first (`order=asc`), by `severity`,
    `kind`, `vm`, `since`/`until`; paged by `limit` (default 100) and `offset` or `cursor`."""
    q = request.query
    window = Window.parse(q, alerts.FILTERS, default_limit=100, max_limit=1000)
    everything = flag(request, "all")
    if q.get("severity") and q["severity"] not in SEVERITIES:
        raise Invalid("severity", f"{q['severity']!r} is not one of {', '.join(SEVERITIES)}", where="query")

    def work(s: Session) -> dict[str, Any]:
        return alerts.alerts_page(
            s, window, everything=everything, severity=q.get("severity"), kind=q.get("kind"), vm=q.get("vm")
        )

    return json_response(await in_session(request, work))


@routes.post("/api/v1/alerts/{alert_id}/ack")
@needs(Permission.ALERTS_ACK)
@op("Acknowledge an alert (it leaves the open list)", answer=Alert, cli="vbm alerts ack ALERT_ID --json")
async def ack_alert(request: web.Request) -> web.Response:
    alert_id, now = request.match_info["alert_id"], request.app[CTX].clock()

    def work(s: Session) -> dict[str, object]:
        alert = alerts.acknowledge(s, alert_id, now)
        if alert is None:
            raise NotFound(f"no alert {alert_id!r}")
        return alerts.alert_view(alert)

    return json_response(await in_session(request, work, write=True))


@routes.get("/api/v1/notifications")
@needs(Permission.NOTIFICATIONS_READ)
@op(
    "The notification channels and the delivery log",
    query=(*WINDOW, *DELIVERY_FILTERS),
    answer=Notifications,
    cli="vbm notify log --json",
)
async def get_notifications(request: web.Request) -> web.Response:
    """The channels (without their secrets) and the deliveries, newest first (`order=asc`), by
    `channel`, `state`, `outcome`, `alert`, `since`/`until`; paged by `limit` and `offset` or
    `cursor`."""
    ctx, q = request.app[CTX], request.query
    window = Window.parse(q, notify_log.FILTERS)

    def work(s: Session) -> dict[str, Any]:
        page = notify_log.deliveries(s, window, q)
        return {"channels": notify.channels_view(chstore.effective(s, ctx.settings)), **page}

    return json_response(await in_session(request, work))


@routes.post("/api/v1/notifications/test")
@needs(Permission.NOTIFICATIONS_WRITE)
@op(
    "Send a test message over every channel, or one (`channel` in the body)",
    body=TestWhich,
    body_required=False,
    answer=Tried,
    errors=(503,),
    cli="vbm notify test CHANNEL --json",
)
async def test_notifications(request: web.Request) -> web.Response:
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, dict):
        raise Invalid("(body)", 'must be a JSON object: {} for every channel, or {"channel": NAME}')
    name = body.get("channel")
    if name is not None and not isinstance(name, str):
        raise Invalid("channel", "must be a channel's name")
    return json_response(notify.tested(await send_test(request, name)))


async def send_test(
    request: web.Request, name: str | None, timeout: float | None = None
) -> list[dict[str, Any]]:
    """A test message over every channel or the one named (the API's and the web UI's "Send
    test"): one result per channel, its error included. Invalid names an unknown channel; with
    `timeout`, a channel that has not answered by then is a failure saying so."""
    ctx = request.app[CTX]

    def effective(s: Session) -> NotificationSettings:
        _, broken = chstore.usable(s, ctx.settings)
        if name in broken:  # says what cannot be decrypted and how to fix it
            raise broken[name]
        return chstore.effective(s, ctx.settings)

    settings = await in_session(request, effective)
    try:
        sending = notify.send_test(settings, ctx.clock(), name)
        if timeout is None:
            return await sending
        try:
            return await asyncio.wait_for(sending, timeout)
        except TimeoutError:
            return [{"channel": name, "ok": False, "error": f"no answer within {timeout:g} s"}]
    except KeyError:
        known = ", ".join(c.name for c in settings.channels) or "none configured or added"
        raise Invalid("channel", f"no notification channel named {name!r} (channels: {known})") from None
