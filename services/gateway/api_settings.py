"""/api/v1/locations, /api/v1/smtp, /api/v1/channels: repository locations with their
credentials, the SMTP login and notification channels, stored with their secrets encrypted
(shared/catalog/locations.py, smtp.py, channels.py). Configured ones (environment, TOML) take
precedence and are read only here (`"source": "env"`, 409 on a change). Secrets are write-only:
answers say `"secret_key": "set"`. A location is opened with the given credentials before it is
saved (`?skip_test=true` to save without)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.answers.settings import (
    ChannelAnswer,
    ChannelChange,
    ChannelList,
    Deleted,
    LocationAnswer,
    LocationBody,
    LocationList,
    LocationSaved,
    SmtpAnswer,
)
from services.gateway.api_vcenters import SKIP_TEST
from services.gateway.apidoc import op
from services.gateway.common import CTX, field_error, flag, in_session, json_response, problem, read_json
from shared.catalog import channels as chstore
from shared.catalog import locations as locstore
from shared.catalog import smtp as smtpstore
from shared.model.access import Permission
from shared.repo.locations import try_open
from shared.settings_notify import ChannelSettings, SMTPSettings

routes = web.RouteTableDef()


async def _tested(request: web.Request, loc: locstore.Location) -> dict[str, Any] | web.Response:
    """The open test's result for the answer, or a 422 saying what failed (nothing saved)."""
    if flag(request, "skip_test"):
        return locstore.SKIPPED
    failed = await try_open(loc.url, loc.credentials())
    test = locstore.open_test(loc.url, failed)
    if failed is None:
        return test
    detail = f"url: {loc.url} cannot be opened with these credentials: {failed}; nothing was saved"
    errors = [field_error("url", "body", f"cannot be opened with these credentials: {failed}")]
    return problem(422, "Unprocessable Entity", detail, errors, extra={"test": test})


@routes.get("/api/v1/locations")
@needs(Permission.REPOSITORIES_READ)
@op(
    "The repository locations: the configured repository (default, source env) and stored ones",
    answer=LocationList,
    cli="vbm location list",
)
async def list_locations(request: web.Request) -> web.Response:
    settings = request.app[CTX].settings
    views = await in_session(request, lambda s: locstore.list_views(s, settings))
    return json_response({"locations": views, "total": len(views)})


@routes.post("/api/v1/locations")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Add a location with its credentials, opened with them first (it fails: 422 with `test`)",
    query=(SKIP_TEST,),
    body=LocationBody,
    answer=LocationSaved,
    status=201,
    errors=(409, 503),
    cli="vbm location add NAME --url URL",
)
async def add_location(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await read_json(request)
    loc = await in_session(request, lambda s: locstore.candidate_new(s, ctx.settings, body))
    tested = await _tested(request, loc)
    if isinstance(tested, web.Response):
        return tested

    def save(s: Session) -> dict[str, Any]:
        locstore.candidate_new(s, ctx.settings, body)  # still free (another request may have won)
        return locstore.row_view(locstore.save(s, ctx.settings, loc, ctx.clock()), secrets=set(loc.secrets))

    view = await in_session(request, save, write=True)
    return json_response({**view, "test": tested}, 201, {"Location": f"/api/v1/locations/{loc.name}"})


@routes.get("/api/v1/locations/{name}")
@needs(Permission.REPOSITORIES_READ)
@op("A repository location (never its secrets)", answer=LocationAnswer, cli="vbm location show NAME")
async def get_location(request: web.Request) -> web.Response:
    settings, name = request.app[CTX].settings, request.match_info["name"]
    return json_response(await in_session(request, lambda s: locstore.get_view(s, settings, name)))


@routes.put("/api/v1/locations/{name}")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Change a stored location (fields left out stay, secrets too), opened with them first",
    query=(SKIP_TEST,),
    body=LocationBody,
    answer=LocationSaved,
    errors=(409, 503),
    cli="vbm location edit NAME",
)
async def change_location(request: web.Request) -> web.Response:
    ctx, name = request.app[CTX], request.match_info["name"]
    body = await read_json(request)
    loc = await in_session(request, lambda s: locstore.candidate_change(s, ctx.settings, name, body))
    tested = await _tested(request, loc)
    if isinstance(tested, web.Response):
        return tested

    def save(s: Session) -> dict[str, Any]:
        return locstore.row_view(locstore.save(s, ctx.settings, loc, ctx.clock()), secrets=set(loc.secrets))

    return json_response({**await in_session(request, save, write=True), "test": tested})


@routes.delete("/api/v1/locations/{name}")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Remove a stored location (409 while a job uses it, or for the configured one)",
    answer=Deleted,
    errors=(409,),
    cli="vbm location rm NAME",
)
async def delete_location(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await in_session(request, lambda s: locstore.remove(s, name), write=True)
    return json_response({"deleted": name})


@routes.get("/api/v1/smtp")
@needs(Permission.NOTIFICATIONS_READ)
@op(
    "The SMTP server in effect (never its password); 404 when there is none",
    answer=SmtpAnswer,
    cli="vbm smtp show",
)
async def get_smtp(request: web.Request) -> web.Response:
    settings = request.app[CTX].settings
    return json_response(await in_session(request, lambda s: smtpstore.view(s, settings)))


@routes.put("/api/v1/smtp")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Store the SMTP server (fields left out stay, the password too); 409 when it is configured",
    body=SMTPSettings,
    answer=SmtpAnswer,
    errors=(409, 503),
    cli="vbm smtp set --host HOST",
)
async def put_smtp(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await read_json(request)

    def save(s: Session) -> dict[str, Any]:
        return smtpstore.save(s, ctx.settings, smtpstore.candidate(s, ctx.settings, body), ctx.clock())

    return json_response(await in_session(request, save, write=True))


@routes.delete("/api/v1/smtp")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Remove the stored SMTP server; 409 when it is configured",
    answer=Deleted,
    errors=(409,),
    cli="vbm smtp clear",
)
async def delete_smtp(request: web.Request) -> web.Response:
    settings = request.app[CTX].settings
    await in_session(request, lambda s: smtpstore.clear(s, settings), write=True)
    return json_response({"deleted": "smtp"})


@routes.get("/api/v1/channels")
@needs(Permission.NOTIFICATIONS_READ)
@op(
    "The notification channels: configured (source env) and stored (source api)",
    answer=ChannelList,
    cli="vbm channel list",
)
async def list_channels(request: web.Request) -> web.Response:
    settings = request.app[CTX].settings
    views = await in_session(request, lambda s: chstore.list_views(s, settings))
    return json_response({"channels": views, "total": len(views)})


@routes.post("/api/v1/channels")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Add a notification channel (its URL and HMAC key stored encrypted)",
    body=ChannelSettings,
    answer=ChannelAnswer,
    status=201,
    errors=(409, 503),
    cli="vbm channel add NAME --type TYPE",
)
async def add_channel(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await read_json(request)

    def save(s: Session) -> dict[str, Any]:
        channel = chstore.candidate_new(s, ctx.settings, body)
        chstore.save(s, ctx.settings, channel, ctx.clock())
        return chstore.get_view(s, ctx.settings, channel.name)

    view = await in_session(request, save, write=True)
    return json_response(view, 201, {"Location": f"/api/v1/channels/{view['name']}"})


@routes.get("/api/v1/channels/{name}")
@needs(Permission.NOTIFICATIONS_READ)
@op("A notification channel (never its URL's path or key)", answer=ChannelAnswer, cli="vbm channel show NAME")
async def get_channel(request: web.Request) -> web.Response:
    settings, name = request.app[CTX].settings, request.match_info["name"]
    return json_response(await in_session(request, lambda s: chstore.get_view(s, settings, name)))


@routes.put("/api/v1/channels/{name}")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Change a stored channel (fields left out stay, secrets too); 409 for a configured one",
    body=ChannelChange,
    answer=ChannelAnswer,
    errors=(409, 503),
    cli="vbm channel edit NAME",
)
async def change_channel(request: web.Request) -> web.Response:
    ctx, name = request.app[CTX], request.match_info["name"]
    body = await read_json(request)

    def save(s: Session) -> dict[str, Any]:
        chstore.save(s, ctx.settings, chstore.candidate_change(s, ctx.settings, name, body), ctx.clock())
        return chstore.get_view(s, ctx.settings, name)

    return json_response(await in_session(request, save, write=True))


@routes.delete("/api/v1/channels/{name}")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Remove a stored channel (409 while a job names it, or for a configured one)",
    answer=Deleted,
    errors=(409,),
    cli="vbm channel rm NAME",
)
async def delete_channel(request: web.Request) -> web.Response:
    ctx, name = request.app[CTX], request.match_info["name"]
    await in_session(request, lambda s: chstore.remove(s, ctx.settings, name), write=True)
    return json_response({"deleted": name})
