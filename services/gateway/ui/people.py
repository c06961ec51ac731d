"""Settings for people: the users (add, role, enable or disable, reset a password) and API keys
(the caller's own; every user's for keys:admin), through the same catalog functions as
services/gateway/api_people.py (shared/catalog/users.py, shared/catalog/apikeys.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import IDENTITY, needs
from services.gateway.api_people import _expiry
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import page, render
from shared.catalog import apikeys, secrets, users
from shared.errors import Conflict, Invalid, NotFound
from shared.model.access import Permission, Role, allows

routes = web.RouteTableDef()

ROLES = tuple(r.value for r in Role)


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) and name != "password" else str(value or "")


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise Invalid("role", f"Choose a role: {', '.join(ROLES)}") from None


async def _users_page(
    request: web.Request, status: int = 200, errors: dict[str, str] | None = None, **values: Any
) -> web.Response:
    settings = request.app[CTX].settings
    found, vault = await in_session(request, lambda s: (users.list_users(s), secrets.key_status(s, settings)))
    return render(
        request,
        "people/users.html",
        status,
        users=found,
        vault=vault,
        roles=ROLES,
        errors=errors or {},
        values=values.pop("values", {"role": "viewer"}),
        refused=values.pop("refused", None),
        **values,
    )


@routes.get("/settings/users")
@needs(Permission.USERS_READ)
@page
async def users_page(request: web.Request) -> web.Response:
    return await _users_page(request)


@routes.post("/settings/users")
@needs(Permission.USERS_WRITE)
@page
async def add_user(request: web.Request) -> web.Response:
    """Add a user (as POST /api/v1/users): back to the list, or the form again with what is wrong."""
    form = await request.post()
    values = {k: _text(form, k) for k in ("name", "role", "display_name", "password")}
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security
    try:
        role = _role(values["role"])
        if not values["name"]:
            raise Invalid("name", "Enter the user's name")
        await in_session(
            request,
            lambda s: users.add(
                s, values["name"], role, now, rules, values["password"] or None, values["display_name"]
            ),
            write=True,
        )
    except Invalid as exc:
        values["password"] = ""
        return await _users_page(request, 422, {exc.field: exc.message}, values=values)
    except Conflict as exc:
        values["password"] = ""
        return await _users_page(request, 422, {"name": str(exc)}, values=values)
    raise web.HTTPSeeOther("/settings/users")


@routes.post("/settings/users/{user}")
@needs(Permission.USERS_WRITE)
@page
async def change_user(request: web.Request) -> web.Response:
    """Change a user's role, enable or disable them, or set a password (as PUT /api/v1/users/{name}).
    What the catalog refuses (the last enabled admin) is shown on the page, 409."""
    name, form = request.match_info["user"], await request.post()
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security
    do = _text(form, "do")

    def change(s: Session) -> None:
        if do == "role":
            users.change(s, name, now, role=_role(_text(form, "role")))
        elif do in ("enable", "disable"):
            users.change(s, name, now, enabled=do == "enable")
        elif do == "password":
            users.set_password(s, name, _text(form, "password"), now, rules)
        else:
            raise Invalid("do", "one of role, enable, disable, password")

    try:
        await in_session(request, change, write=True)
    except Conflict as exc:
        return await _users_page(request, 409, refused={"name": name, "message": str(exc)})
    except Invalid as exc:
        if exc.field == "do":
            raise
        return await _users_page(
            request, 422, refused={"name": name, "message": exc.message, "field": exc.field}
        )
    raise web.HTTPSeeOther("/settings/users")


async def _keys_page(
    request: web.Request,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    minted: dict[str, Any] | None = None,
) -> web.Response:
    me = request[IDENTITY]
    everyone = allows(me.role, Permission.KEYS_ADMIN)

    def work(s: Session) -> list[apikeys.KeyInfo]:
        return apikeys.list_keys(s, owner=None if everyone else me.user)

    keys = await in_session(request, work)
    return render(
        request,
        "people/keys.html",
        status,
        keys=keys,
        everyone=everyone,
        roles=[r for r in ROLES if me.role.covers(Role(r))],
        errors=errors or {},
        values=values or {"role": me.role.value, "expires_in_days": ""},
        minted=minted,
        max_days=request.app[CTX].settings.security.api_key_max_days,
    )


@routes.get("/settings/keys")
@needs(Permission.SELF)
@page
async def keys_page(request: web.Request) -> web.Response:
    return await _keys_page(request)


@routes.post("/settings/keys")
@needs(Permission.SELF)
@page
async def mint_key(request: web.Request) -> web.Response:
    """Mint a key of the caller's own (as POST /api/v1/keys): the answer shows it, once."""
    form = await request.post()
    values = {k: _text(form, k) for k in ("name", "role", "expires_in_days")}
    me, now = request[IDENTITY], request.app[CTX].clock()
    try:
        role = _role(values["role"] or me.role.value)
        if not me.role.covers(role):
            raise Invalid("role", f"you are {me.role.value}: a key cannot carry {role.value}")
        if not values["name"]:
            raise Invalid("name", "Enter a name for the key")
        days = values["expires_in_days"]
        if days and (not days.isdigit() or not 1 <= int(days) <= 3650):
            raise Invalid("expires_in_days", "Enter a whole number of days from 1 to 3650, or leave it empty")
        expires_at = _expiry(request, int(days) if days else None)

        def make(s: Session) -> tuple[apikeys.KeyInfo, str]:
            try:
                return apikeys.create(s, values["name"], now, owner=me.user, role=role, expires_at=expires_at)  # type: ignore[arg-type]
            except apikeys.ApiKeyError as exc:
                raise Invalid("name", str(exc)) from None

        info, key = await in_session(request, make, write=True)
    except Invalid as exc:
        return await _keys_page(request, 422, {exc.field: exc.message}, values)
    return await _keys_page(request, 201, minted={"name": info.name, "key": key})


@routes.post("/settings/keys/{key_id}/revoke")
@needs(Permission.SELF)
@page
async def revoke_key(request: web.Request) -> web.Response:
    """Revoke a key (as DELETE /api/v1/keys/{key}, or /api/v1/users/{name}/keys/{key} for
    keys:admin), its name typed to confirm."""
    ref, form, me = request.match_info["key_id"], await request.post(), request[IDENTITY]
    owner = _text(form, "owner") or me.user
    if owner != me.user and not allows(me.role, Permission.KEYS_ADMIN):
        raise web.HTTPForbidden(text="revoking another user's key needs keys:admin")
    now = request.app[CTX].clock()

    def revoke(s: Session) -> None:
        found = [k for k in apikeys.list_keys(s, owner=owner) if ref in (k.id, k.name)]
        if not found:
            raise NotFound(f"{owner} has no key {ref!r}")
        if _text(form, "confirm_name") != found[0].name:
            raise Invalid("confirm_name", f"type the key's name, {found[0].name}, to confirm")
        try:
            apikeys.revoke(s, found[0].id, now, owner=owner)
        except apikeys.ApiKeyError as exc:
            raise NotFound(str(exc)) from None

    await in_session(request, revoke, write=True)
    raise web.HTTPSeeOther("/settings/keys")
