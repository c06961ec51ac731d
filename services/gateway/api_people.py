"""People: users and API keys (docs/api.md, "People"); sessions and the first admin are in api_session.py."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from services.gateway.access import IDENTITY, Identity, needs
from services.gateway.answers.people import (
    KeyAnswer,
    KeyList,
    NewKeyAnswer,
    UserAnswer,
    UserList,
)
from services.gateway.apidoc import op
from services.gateway.common import CTX, in_session, json_response, read_json
from shared.catalog import apikeys, users
from shared.errors import Conflict, Invalid, NotFound
from shared.model.access import Permission, Role

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

Text = Annotated[str, StringConstraints(max_length=256)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(Body):
    name: Text
    role: Role
    password: Text | None = None
    display_name: Annotated[str, StringConstraints(max_length=128)] = ""


class UserChange(Body):
    role: Role | None = None
    enabled: bool | None = None
    display_name: Annotated[str, StringConstraints(max_length=128)] | None = None
    password: Text | None = None


class NewKey(Body):
    name: Text
    role: Role | None = None
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


def caller(request: web.Request) -> Identity:
    return request[IDENTITY]


@routes.get("/api/v1/users")
@needs(Permission.USERS_READ)
@op("The users, by name (never a password)", answer=UserList, cli="vbm user list")
async def list_users(request: web.Request) -> web.Response:
    rows = await in_session(request, users.list_users)
    return json_response({"users": [u.public() for u in rows], "total": len(rows)})


@routes.post("/api/v1/users")
@needs(Permission.USERS_WRITE)
@op(
    "Add a user (without a password: API keys only, until one is set)",
    body=NewUser,
    answer=UserAnswer,
    status=201,
    errors=(409,),
    cli="vbm user add NAME --role ROLE",
)
async def add_user(request: web.Request) -> web.Response:
    body = NewUser.model_validate(await read_json(request))
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security
    user = await in_session(
        request,
        lambda s: users.add(s, body.name, body.role, now, rules, body.password, body.display_name),
        write=True,
    )
    return json_response(user.public(), 201, headers={"Location": f"/api/v1/users/{user.name}"})


@routes.get("/api/v1/users/{name}")
@needs(Permission.USERS_READ)
@op("A user", answer=UserAnswer, cli="vbm user show NAME")
async def get_user(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    user = await in_session(request, lambda s: users.info(users.get(s, name)))
    return json_response(user.public())


@routes.put("/api/v1/users/{name}")
@needs(Permission.USERS_WRITE)
@op(
    "Change a user's role, state, display name or password (409 for the last enabled admin)",
    body=UserChange,
    answer=UserAnswer,
    errors=(409,),
    cli="vbm user edit NAME",
)
async def change_user(request: web.Request) -> web.Response:
    body = UserChange.model_validate(await read_json(request))
    name, ctx = request.match_info["name"], request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security

    def change(s: Session) -> users.UserInfo:
        user = users.change(
            s, name, now, role=body.role, enabled=body.enabled, display_name=body.display_name
        )
        if body.password is not None:
            user = users.set_password(s, name, body.password, now, rules)
        return user

    user = await in_session(request, change, write=True)
    return json_response(user.public())


def _expiry(request: web.Request, days: int | None) -> object:
    ctx = request.app[CTX]
    most = ctx.settings.security.api_key_max_days
    if days is None and most is not None:
        days = most
    if days is not None and most is not None and days > most:
        raise Invalid("expires_in_days", f"at most {most} (security.api_key_max_days)")
    return None if days is None else ctx.clock() + timedelta(days=days)


@routes.get("/api/v1/keys")
@needs(Permission.SELF)
@op("The caller's own API keys (never their secrets)", answer=KeyList, cli="vbm apikey list --user USER")
async def my_keys(request: web.Request) -> web.Response:
    me = caller(request)
    keys = await in_session(request, lambda s: apikeys.list_keys(s, owner=me.user))
    return json_response({"keys": [k.public() for k in keys], "total": len(keys)})


@routes.post("/api/v1/keys")
@needs(Permission.SELF)
@op(
    "Mint an API key of the caller's own: the key is in this answer only",
    body=NewKey,
    answer=NewKeyAnswer,
    status=201,
    errors=(409,),
    cli="vbm apikey create NAME --user USER",
)
async def mint_key(request: web.Request) -> web.Response:
    """A key of the caller's own, carrying at most the caller's role (a key's own role, when the
    caller is a key: a key cannot mint a stronger one)."""
    body = NewKey.model_validate(await read_json(request))
    me, now = caller(request), request.app[CTX].clock()
    role = body.role or me.role
    if not me.role.covers(role):
        raise web.HTTPForbidden(
            text=f"{me.actor} is {me.role.value}: it cannot mint a key carrying {role.value}"
        )
    expires_at = _expiry(request, body.expires_in_days)

    def make(s: Session) -> tuple[apikeys.KeyInfo, str]:
        try:
            return apikeys.create(s, body.name, now, owner=me.user, role=role, expires_at=expires_at)  # type: ignore[arg-type]
        except apikeys.ApiKeyError as exc:
            raise Conflict(str(exc)) from None

    info, key = await in_session(request, make, write=True)
    return json_response({**info.public(), "key": key}, 201)


async def _revoke(request: web.Request, owner: str) -> web.Response:
    ref, now = request.match_info["key"], request.app[CTX].clock()

    def revoke(s: Session) -> apikeys.KeyInfo:
        try:
            return apikeys.revoke(s, ref, now, owner=owner)
        except apikeys.ApiKeyError as exc:
            raise NotFound(str(exc)) from None

    info = await in_session(request, revoke, write=True)
    return json_response(info.public())


@routes.delete("/api/v1/keys/{key}")
@needs(Permission.SELF)
@op(
    "Revoke one of the caller's own keys (by id or name): it stops working at once",
    answer=KeyAnswer,
    cli="vbm apikey revoke KEY --user USER",
)
async def revoke_my_key(request: web.Request) -> web.Response:
    return await _revoke(request, caller(request).user)


@routes.get("/api/v1/users/{name}/keys")
@needs(Permission.KEYS_ADMIN)
@op("A user's API keys (never their secrets)", answer=KeyList, cli="vbm apikey list --user NAME")
async def keys_of_user(request: web.Request) -> web.Response:
    name = request.match_info["name"]

    def keys(s: Session) -> list[apikeys.KeyInfo]:
        users.get(s, name)
        return apikeys.list_keys(s, owner=name)

    found = await in_session(request, keys)
    return json_response({"keys": [k.public() for k in found], "total": len(found)})


@routes.delete("/api/v1/users/{name}/keys/{key}")
@needs(Permission.KEYS_ADMIN)
@op(
    "Revoke a key of a user (by id or name): it stops working at once",
    answer=KeyAnswer,
    cli="vbm apikey revoke KEY --user NAME",
)
async def revoke_key_of_user(request: web.Request) -> web.Response:
    return await _revoke(request, request.match_info["name"])
