"""Settings: repository locations (/settings/repositories): the configured repository (read only
here) and stored locations with their credentials, listed with their usage, added, changed and
removed, through the same catalog functions as /api/v1/locations (services/gateway/api_settings.py):
a location is opened with its credentials before it is saved (shared.repo.locations.try_open).
Secrets are write-only: a blank field keeps the stored one."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import page, render
from services.gateway.ui.settings_common import removed
from shared.catalog import locations as locstore
from shared.catalog import usage
from shared.errors import Conflict, Invalid, StoreError
from shared.model.access import Permission
from shared.repo.locations import try_open

routes = web.RouteTableDef()

PLAIN = ("access_key", "known_hosts")
SECRETS = ("secret_key", "account_key", "private_key", "password", "config")
LABELS = {"name": "Name", "url": "URL", "access_key": "S3 access key", "known_hosts": "SFTP known_hosts",
          "secret_key": "S3 secret key", "account_key": "Azure account key", "private_key": "SFTP key",
          "password": "SFTP password", "config": "rclone config"}  # fmt: skip


async def _page(
    request: web.Request, status: int = 200, values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None, refused: dict[str, str] | None = None,
) -> web.Response:  # fmt: skip
    settings = request.app[CTX].settings

    def work(s: Session) -> dict[str, Any]:
        views = locstore.list_views(s, settings)
        used = usage.brief(s)
        for view in views:  # the latest sample of the repository at the location's URL
            view["usage"] = next((u for u in used if locstore.under(u["repository"], view["url"])), None)
        return {"locations": views}

    found = await in_session(request, work)
    return render(
        request, "settings/repositories.html", status, locations=found["locations"], values=values or {},
        errors=errors or {}, refused=refused or {}, labels=LABELS, plain=PLAIN, secrets=SECRETS,
    )  # fmt: skip


@routes.get("/settings/repositories")
@needs(Permission.REPOSITORIES_READ)
@page
async def repositories_page(request: web.Request) -> web.Response:
    return await _page(request)


def _values(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {k: str(form.get(k, "")).strip() for k in ("name", "url", *PLAIN)}
    values["skip_test"] = form.get("skip_test") == "on"
    return values


def _body(values: dict[str, Any], form: Any) -> dict[str, Any]:
    """Only what was filled in: a field of another kind left blank is no error, a blank secret stays."""
    body = {k: values[k] for k in ("url", *PLAIN) if values[k]}
    body.update({k: str(form.get(k)) for k in SECRETS if form.get(k)})
    return body


def _error(exc: StoreError) -> tuple[str, str]:
    if isinstance(exc, Invalid):
        field = exc.field.split(".")[0]
        field = field if field in LABELS else "name"
        return field, f"{LABELS[field]}: {exc.message}"
    message = str(exc)
    return ("url", message) if message.startswith("url:") else ("name", message)


async def _save(request: web.Request, name: str | None) -> dict[str, str]:
    """Check, open and store a location (as POST or PUT /api/v1/locations); the errors by field."""
    ctx, form = request.app[CTX], await request.post()
    values = _values(form) | ({"name": name} if name else {})
    body = _body(values, form)

    def candidate(s: Session) -> locstore.Location:
        if name is None:
            return locstore.candidate_new(s, ctx.settings, {"name": values["name"], **body})
        return locstore.candidate_change(s, ctx.settings, name, body)

    try:
        loc = await in_session(request, candidate)
        failed = None if values["skip_test"] else await try_open(loc.url, loc.credentials())
        if failed is not None:
            return {"url": f"URL: cannot be opened with these credentials: {failed}; nothing was saved"}

        def save(s: Session) -> None:
            candidate(s)  # still free (another request may have won)
            locstore.save(s, ctx.settings, loc, ctx.clock())

        await in_session(request, save, write=True)
    except (Invalid, Conflict) as exc:
        field, message = _error(exc)
        return {field: message}
    return {}


@routes.post("/settings/repositories")
@needs(Permission.SETTINGS_WRITE)
@page
async def add_location(request: web.Request) -> web.Response:
    errors = await _save(request, None)
    if not errors:
        raise web.HTTPSeeOther("/settings/repositories")
    return await _page(request, 422, _values(await request.post()), errors)


async def _edit(
    request: web.Request, values: dict[str, Any], errors: dict[str, str], status: int
) -> web.Response:
    settings, name = request.app[CTX].settings, request.match_info["name"]
    view = await in_session(request, lambda s: locstore.get_view(s, settings, name))
    if view["source"] != "api":
        raise Conflict(f"location {name!r} is the configured repository: change it in the configuration")
    values = values or {k: view.get(k) or "" for k in ("url", *PLAIN)}
    return render(
        request, "settings/repository_edit.html", status, loc=view, values=values, errors=errors,
        labels=LABELS, plain=PLAIN, secrets=SECRETS, set_secrets={k: view.get(k) == "set" for k in SECRETS},
    )  # fmt: skip


@routes.get("/settings/repositories/{name}/edit")
@needs(Permission.SETTINGS_WRITE)
@page
async def edit_form(request: web.Request) -> web.Response:
    return await _edit(request, {}, {}, 200)


@routes.post("/settings/repositories/{name}/edit")
@needs(Permission.SETTINGS_WRITE)
@page
async def change_location(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    settings = request.app[CTX].settings
    await in_session(request, lambda s: locstore.get_view(s, settings, name))  # 404 before the form
    errors = await _save(request, name)
    if not errors:
        raise web.HTTPSeeOther("/settings/repositories")
    return await _edit(request, _values(await request.post()), errors, 422)


@routes.post("/settings/repositories/{name}/delete")
@needs(Permission.SETTINGS_WRITE)
@page
async def delete_location(request: web.Request) -> web.Response:
    """Remove a stored location (as DELETE /api/v1/locations/{name}); refused while jobs use it."""
    name = request.match_info["name"]
    refused = await removed(request, "location", lambda s: locstore.remove(s, name), _page)
    if refused is not None:
        return refused
    raise web.HTTPSeeOther("/settings/repositories")
