"""People: log in and out, the first admin, users, and API keys (docs/api.md, "People")."""

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
    PasswordChanged,
    SessionAnswer,
    UserAnswer,
    UserList,
    WhoAmI,
)
from services.gateway.apidoc import op
from services.gateway.common import CTX, in_session, json_response, read_json
from shared.catalog import apikeys, sessions, users
from shared.clock import iso
from shared.errors import Conflict, Invalid, NotFound
from shared.model.access import PUBLIC, Permission, Role

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

Text = Annotated[str, StringConstraints(max_length=256)]
LOGIN_NAME = web.RequestKey("login_name", str)  # who tried to log in, for the audit log


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(_Body):
    name: Text
    password: Text


class Setup(_Body):
    token: Text
    name: Text
    password: Text
    display_name: Annotated[str, StringConstraints(max_length=128)] = ""


class NewUser(_Body):
    name: Text
    role: Role
    password: Text | None = None
    display_name: Annotated[str, StringConstraints(max_length=128)] = ""


class UserChange(_Body):
    role: Role | None = None
    enabled: bool | None = None
    display_name: Annotated[str, StringConstraints(max_length=128)] | None = None
    password: Text | None = None


class PasswordChange(_Body):
    current_password: Text
    new_password: Text


class NewKey(_Body):
    name: Text
    role: Role | None = None
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


def _me(request: web.Request) -> Identity:
    return request[IDENTITY]


def _session_answer(user: users.UserInfo, found: sessions.SessionInfo) -> dict[str, object]:
    return {
        "user": user.public(),
        "csrf_token": found.csrf_token,
        "expires_at": iso(found.expires_at),
        "idle_expires_at": iso(found.idle_expires_at),
    }


async def _start_session(request: web.Request, user: users.UserInfo, status: int) -> web.Response:
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security
    source = request.remote or ""
    token, found = await in_session(
        request, lambda s: sessions.start(s, user.name, now, rules, source), write=True
    )
    request[IDENTITY] = Identity(user=user.name, role=user.role, via="session", session_id=found.id)
    resp = json_response(_session_answer(user, found), status)
    resp.set_cookie(
        sessions.COOKIE,
        token,
        max_age=int(rules.session_max_hours * 3600),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return resp


@routes.post("/api/v1/session")
@needs(PUBLIC)
@op(
    "Log in: a session cookie and its CSRF token (429 with Retry-After while the account waits)",
    body=Login,
    answer=SessionAnswer,
    status=201,
    errors=(401, 429),
    no_cli="a browser's session: vbm works on the database as the OS user, and clients use API keys",
)
async def login(request: web.Request) -> web.Response:
    body = Login.model_validate(await read_json(request))
    request[LOGIN_NAME] = body.name
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security

    def check(s: Session) -> users.UserInfo | users.LoginRefused:
        try:
            return users.authenticate(s, body.name, body.password, now, rules)
        except users.LoginRefused as refused:
            return refused  # returned, not raised: the failure count must be committed

    outcome = await in_session(request, check, write=True)
    if isinstance(outcome, users.LoginRefused):
        log.warning("login refused from %s: %s", request.remote, outcome.reason)
        if outcome.retry_after is not None:
            raise web.HTTPTooManyRequests(
                text=outcome.public, headers={"Retry-After": str(int(outcome.retry_after) + 1)}
            )
        raise web.HTTPUnauthorized(text=outcome.public)
    log.info("%s logged in from %s", outcome.name, request.remote)
    return await _start_session(request, outcome, 201)


@routes.get("/api/v1/session")
@needs(Permission.SELF)
@op(
    "Who the caller is: the user, the role this request has, and the session or key it came with",
    answer=WhoAmI,
    no_cli="the caller of the API itself: on the command line the OS user works on the database",
)
async def whoami(request: web.Request) -> web.Response:
    me = _me(request)
    ctx = request.app[CTX]
    user = await in_session(request, lambda s: users.info(users.get(s, me.user)))
    answer: dict[str, object] = {"user": user.public(), "via": me.via, "role": me.role.value}
    if me.via == "session":
        token = request.cookies.get(sessions.COOKIE)
        found, _ = await in_session(
            request, lambda s: sessions.lookup(s, token, ctx.clock(), ctx.settings.security)
        )
        if found is not None:
            answer.update(_session_answer(user, found))
    else:
        answer["key_id"] = me.key_id
    return json_response(answer)


@routes.delete("/api/v1/session")
@needs(Permission.SELF)
@op(
    "Log out: the session ends (409 for a request with an API key: revoke the key instead)",
    status=204,
    errors=(409,),
    no_cli="a browser's session: the command line has none",
)
async def logout(request: web.Request) -> web.Response:
    me = _me(request)
    if me.session_id is None:
        raise Conflict(
            "this request came with an API key, not a session: revoke keys with DELETE /api/v1/keys/{id}"
        )
    session_id, now = me.session_id, request.app[CTX].clock()
    await in_session(request, lambda s: sessions.end(s, session_id, now), write=True)
    resp = web.Response(status=204)
    resp.del_cookie(sessions.COOKIE, path="/")
    return resp


@routes.put("/api/v1/session/password")
@needs(Permission.SELF)
@op(
    "Change the caller's own password (given the current one): every session ends, this one starts anew",
    body=PasswordChange,
    answer=PasswordChanged,
    cli="vbm user passwd NAME --password-stdin",
)
async def change_own_password(request: web.Request) -> web.Response:
    body = PasswordChange.model_validate(await read_json(request))
    me, ctx = _me(request), request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security

    def change(s: Session) -> users.UserInfo | None:
        try:
            users.authenticate(s, me.user, body.current_password, now, rules)
        except users.LoginRefused:
            return None
        return users.set_password(s, me.user, body.new_password, now, rules)

    user = await in_session(request, change, write=True)
    if user is None:
        raise Invalid("current_password", "is not the password of this user")
    if me.via == "session":  # a new password ends every session: start a fresh one for this browser
        return await _start_session(request, user, 200)
    return json_response({"user": user.public()})


@routes.post("/api/v1/setup")
@needs(PUBLIC)
@op(
    "Make the first admin with the one-time setup token `vbm up` printed, and log in as them",
    body=Setup,
    answer=SessionAnswer,
    status=201,
    errors=(403, 409),
    cli="vbm user add NAME --role admin",
)
async def setup(request: web.Request) -> web.Response:
    """The first admin, made with the one-time token `vbm up` printed on an empty database."""
    body = Setup.model_validate(await read_json(request))
    request[LOGIN_NAME] = body.name
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security

    def make(s: Session) -> users.UserInfo:
        if users.any_exist(s):
            raise Conflict("a user exists already: setup is done (log in, or ask an admin)")
        users.check_name(body.name)
        users.check_password(body.password, body.name, rules)
        if not sessions.use_setup_token(s, body.token, now):
            raise web.HTTPForbidden(text="wrong or expired setup token: restart `vbm up` for a new one")
        return users.add(s, body.name, Role.ADMIN, now, rules, body.password, body.display_name)

    user = await in_session(request, make, write=True)
    log.warning("first admin %r made with the setup token from %s", user.name, request.remote)
    return await _start_session(request, user, 201)


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
    me = _me(request)
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
    me, now = _me(request), request.app[CTX].clock()
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
    return await _revoke(request, _me(request).user)


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
