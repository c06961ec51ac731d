"""Settings: notifications (/settings/notifications): the channels (email, sendmail, Slack, Teams,
webhook, Telegram) with the outcomes and the level each hears of, listed, added, changed and
removed (each type's own fields: static/ui/channels.js shows those of the chosen type), the SMTP server email
channels send through, and "Send test" per channel, through the same catalog functions as
/api/v1/channels, /api/v1/smtp (services/gateway/api_settings.py) and
POST /api/v1/notifications/test (services/gateway/api_alerts.py: send_test). Secrets (a channel's
URL and HMAC key, a bot token, the SMTP password) are write-only: a blank field keeps the stored one."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.common import CTX, in_session
from services.gateway.ui.alerts import tested_one
from services.gateway.ui.render import page, render
from services.gateway.ui.settings_common import removed
from shared.catalog import channels as chstore
from shared.catalog import smtp as smtpstore
from shared.errors import Conflict, Invalid, NotFound, StoreError
from shared.model.access import Permission
from shared.settings_notify import LEVELS, SENDMAIL, TELEGRAM_API

routes = web.RouteTableDef()

TYPES = ("email", "sendmail", "slack", "teams", "webhook", "telegram")
OUTCOMES = ("success", "warning", "failure")
SECURITY = ("starttls", "tls", "none")
LABELS = {"name": "Name", "type": "Type", "to": "Recipients", "url": "URL", "secret": "HMAC key",
          "token": "Bot token", "chat_id": "Chat ID", "api_url": "Bot API server",
          "sendmail": "sendmail program", "level": "Lowest level",
          "on": "Outcomes", "scope": "Scope", "host": "Server", "port": "Port", "security": "Security",
          "username": "User name", "password": "Password", "sender": "From address",
          "ca_file": "CA file"}  # fmt: skip
NEW = {"on": ["failure", "warning"], "scope": "all", "type": "email", "level": "info", "chat_id": "",
       "api_url": TELEGRAM_API, "sendmail": SENDMAIL}  # fmt: skip
PLAIN = ("chat_id", "api_url", "sendmail")  # the plain fields of a type
SECRETS = ("url", "secret", "token")  # write-only: blank keeps (or leaves unset)
SMTP_TEXT = ("host", "port", "security", "username", "sender", "ca_file")


def _error(exc: StoreError, fields: tuple[str, ...], default: str) -> tuple[str, str]:
    if isinstance(exc, Invalid):
        field = exc.field.split(".")[0]
        field = field if field in fields else default
        return field, f"{LABELS[field]}: {exc.message}"
    return default, str(exc)


async def _page(
    request: web.Request, status: int = 200, *, channel: dict[str, Any] | None = None,
    channel_errors: dict[str, str] | None = None, smtp: dict[str, Any] | None = None,
    smtp_errors: dict[str, str] | None = None, tried: dict[str, Any] | None = None,
    refused: dict[str, str] | None = None,
) -> web.Response:  # fmt: skip
    settings = request.app[CTX].settings

    def work(s: Session) -> dict[str, Any]:
        try:
            server: dict[str, Any] | None = smtpstore.view(s, settings)
        except NotFound:
            server = None
        return {"channels": chstore.list_views(s, settings), "smtp": server}

    found = await in_session(request, work)
    server = found["smtp"] or {}
    smtp_values = smtp or {k: server.get(k) or "" for k in SMTP_TEXT}
    return render(
        request, "settings/notifications.html", status, channels=found["channels"], server=found["smtp"],
        values=channel or NEW, errors=channel_errors or {}, smtp=smtp_values, smtp_errors=smtp_errors or {},
        tried=tried or {}, refused=refused or {}, types=TYPES, outcomes=OUTCOMES, levels=LEVELS,
        securities=SECURITY, labels=LABELS,
    )  # fmt: skip


@routes.get("/settings/notifications")
@needs(Permission.NOTIFICATIONS_READ)
@page
async def notifications_settings(request: web.Request) -> web.Response:
    return await _page(request)


def _channel_values(form: Any) -> dict[str, Any]:
    return {
        "name": str(form.get("name", "")).strip(),
        "type": str(form.get("type", "")),
        "to": str(form.get("to", "")).strip(),
        "on": [str(v) for v in form.getall("on", [])],
        "level": str(form.get("level", "info")),
        "scope": str(form.get("scope", "all")),
    } | {k: str(form.get(k, "")).strip() for k in PLAIN}


def _channel_body(values: dict[str, Any], form: Any) -> dict[str, Any]:
    body: dict[str, Any] = {k: values[k] for k in ("type", "on", "level", "scope")}
    body["to"] = [a for a in re.split(r"[,\s]+", values["to"]) if a]
    body |= {k: values[k] for k in PLAIN if values[k]}  # blank: the default
    for secret in SECRETS:
        if form.get(secret):
            body[secret] = str(form.get(secret)).strip()
    return body


CHANNEL_FIELDS = ("name", "type", "to", "url", "secret", "token", "chat_id", "api_url", "sendmail", "on",
                  "level", "scope")  # fmt: skip


@routes.post("/settings/notifications/channels")
@needs(Permission.SETTINGS_WRITE)
@page
async def add_channel(request: web.Request) -> web.Response:
    """Add a channel (as POST /api/v1/channels)."""
    ctx, form = request.app[CTX], await request.post()
    values = _channel_values(form)
    body = {"name": values["name"], **_channel_body(values, form)}

    def save(s: Session) -> None:
        chstore.save(s, ctx.settings, chstore.candidate_new(s, ctx.settings, body), ctx.clock())

    try:
        await in_session(request, save, write=True)
    except (Invalid, Conflict) as exc:
        field, message = _error(exc, CHANNEL_FIELDS, "name")
        return await _page(request, 422, channel=values, channel_errors={field: message})
    raise web.HTTPSeeOther("/settings/notifications")


async def _channel(request: web.Request, name: str) -> dict[str, Any]:
    settings = request.app[CTX].settings
    view = await in_session(request, lambda s: chstore.get_view(s, settings, name))
    if view["source"] != "api":
        raise Conflict(f"channel {name!r} is configured (environment or the TOML file): change it there")
    return view


def _edit(request: web.Request, view: dict[str, Any], values: dict[str, Any], errors: dict[str, str],
          status: int = 200) -> web.Response:  # fmt: skip
    return render(request, "settings/channel_edit.html", status, ch=view, values=values, errors=errors,
                  types=TYPES, outcomes=OUTCOMES, levels=LEVELS, labels=LABELS)  # fmt: skip


@routes.get("/settings/notifications/channels/{name}/edit")
@needs(Permission.SETTINGS_WRITE)
@page
async def edit_channel_form(request: web.Request) -> web.Response:
    view = await _channel(request, request.match_info["name"])
    values = {"name": view["name"], "type": view["type"], "to": ", ".join(view["to"]), "on": view["on"],
              "level": view["level"], "scope": view["scope"]}  # fmt: skip
    values |= {k: view.get(k) or NEW[k] for k in PLAIN}
    return _edit(request, view, values, {})


@routes.post("/settings/notifications/channels/{name}/edit")
@needs(Permission.SETTINGS_WRITE)
@page
async def change_channel(request: web.Request) -> web.Response:
    """Change a stored channel (as PUT /api/v1/channels/{name}): blank secrets stay."""
    ctx, name, form = request.app[CTX], request.match_info["name"], await request.post()
    view = await _channel(request, name)
    values = _channel_values(form) | {"name": name}
    body = _channel_body(values, form)

    def save(s: Session) -> None:
        chstore.save(s, ctx.settings, chstore.candidate_change(s, ctx.settings, name, body), ctx.clock())

    try:
        await in_session(request, save, write=True)
    except (Invalid, Conflict) as exc:
        field, message = _error(exc, CHANNEL_FIELDS, "type")
        return _edit(request, view, values, {field: message}, 422)
    raise web.HTTPSeeOther("/settings/notifications")


@routes.post("/settings/notifications/channels/{name}/delete")
@needs(Permission.SETTINGS_WRITE)
@page
async def delete_channel(request: web.Request) -> web.Response:
    """Remove a stored channel (as DELETE /api/v1/channels/{name}); refused while jobs name it."""
    ctx, name = request.app[CTX], request.match_info["name"]
    refused = await removed(request, "channel", lambda s: chstore.remove(s, ctx.settings, name), _page)
    if refused is not None:
        return refused
    raise web.HTTPSeeOther("/settings/notifications")


@routes.post("/settings/notifications/test")
@needs(Permission.NOTIFICATIONS_WRITE)
@page
async def test_channel(request: web.Request) -> web.Response:
    """Send a test over one channel (as POST /api/v1/notifications/test): htmx gets the result
    beside the button, a plain form the page with the result in place."""
    result = await tested_one(request)
    if request.headers.get("HX-Request") == "true":
        return render(request, "alerts/tested.html", r=result)
    return await _page(request, tried={str(result["channel"]): result})


@routes.post("/settings/notifications/smtp")
@needs(Permission.SETTINGS_WRITE)
@page
async def save_smtp(request: web.Request) -> web.Response:
    """Store the SMTP server (as PUT /api/v1/smtp): a blank password keeps the stored one."""
    ctx, form = request.app[CTX], await request.post()
    values = {k: str(form.get(k, "")).strip() for k in SMTP_TEXT}
    body: dict[str, Any] = {k: v for k, v in values.items() if k != "ca_file"}
    body["ca_file"] = values["ca_file"] or None
    if form.get("password"):
        body["password"] = str(form.get("password"))

    def save(s: Session) -> None:
        smtpstore.save(s, ctx.settings, smtpstore.candidate(s, ctx.settings, body), ctx.clock())

    try:
        await in_session(request, save, write=True)
    except (Invalid, Conflict) as exc:
        field, message = _error(exc, (*SMTP_TEXT, "password"), "host")
        return await _page(request, 422, smtp=values, smtp_errors={field: message})
    raise web.HTTPSeeOther("/settings/notifications")


@routes.post("/settings/notifications/smtp/delete")
@needs(Permission.SETTINGS_WRITE)
@page
async def clear_smtp(request: web.Request) -> web.Response:
    """Remove the stored SMTP server (as DELETE /api/v1/smtp)."""
    settings = request.app[CTX].settings
    await in_session(request, lambda s: smtpstore.clear(s, settings), write=True)
    raise web.HTTPSeeOther("/settings/notifications")
