"""Browser sessions through the API: log in and out, who am I, a new own password, and the first
admin (docs/api.md, "People"). The UI's login and setup pages use the same steps
(services/gateway/ui/session_pages.py)."""

from __future__ import annotations

import logging
from typing import Annotated

from aiohttp import web
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from services.gateway.access import IDENTITY, Identity, needs
from services.gateway.answers.people import PasswordChanged, SessionAnswer, WhoAmI
from services.gateway.api_people import Body, Text, caller
from services.gateway.apidoc import op
from services.gateway.common import CTX, in_session, json_response, read_json
from shared.catalog import sessions, users
from shared.clock import iso
from shared.errors import Conflict, Invalid
from shared.model.access import PUBLIC, Permission, Role

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

LOGIN_NAME = web.RequestKey("login_name", str)  # who tried to log in, for the audit log


class Login(Body):
    name: Text
    password: Text


class Setup(Body):
    token: Text
    name: Text
    password: Text
    display_name: Annotated[str, StringConstraints(max_length=128)] = ""


class PasswordChange(Body):
    current_password: Text
    new_password: Text


def _session_answer(user: users.UserInfo, found: sessions.SessionInfo) -> dict[str, object]:
    return {
        "user": user.public(),
        "csrf_token": found.csrf_token,
        "expires_at": iso(found.expires_at),
        "idle_expires_at": iso(found.idle_expires_at),
    }


async def open_session(request: web.Request, user: users.UserInfo) -> tuple[str, sessions.SessionInfo]:
    """A new session for `user`, who is from now on the caller of `request`: (the cookie's
    token, the session)."""
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security
    source = request.remote or ""
    token, found = await in_session(
        request, lambda s: sessions.start(s, user.name, now, rules, source), write=True
    )
    request[IDENTITY] = Identity(user=user.name, role=user.role, via="session", session_id=found.id)
    return token, found


def set_session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    """The session's cookie: HttpOnly (no script reads it), SameSite=Lax (a link from an alert's
    mail opens the page logged in; every change still needs the CSRF token), Secure over TLS."""
    rules = request.app[CTX].settings.security
    response.set_cookie(
        sessions.COOKIE,
        token,
        max_age=int(rules.session_max_hours * 3600),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )


async def try_login(request: web.Request, name: str, password: str) -> users.UserInfo | users.LoginRefused:
    """The user, or why the login was refused (the failure is counted: the lockout delay)."""
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security

    def check(s: Session) -> users.UserInfo | users.LoginRefused:
        try:
            return users.authenticate(s, name, password, now, rules)
        except users.LoginRefused as refused:
            return refused  # returned, not raised: the failure count must be committed

    outcome = await in_session(request, check, write=True)
    if isinstance(outcome, users.LoginRefused):
        log.warning("login refused from %s: %s", request.remote, outcome.reason)
    else:
        log.info("%s logged in from %s", outcome.name, request.remote)
    return outcome


async def first_admin(
    request: web.Request, token: str, name: str, password: str, display_name: str = ""
) -> users.UserInfo:
    """The first admin, made with the one-time setup token (Conflict once anyone exists,
    403 for a wrong or spent token, Invalid for a name or password the rules refuse)."""
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security

    def make(s: Session) -> users.UserInfo:
        if users.any_exist(s):
            raise Conflict("a user exists already: setup is done (log in, or ask an admin)")
        users.check_name(name)
        users.check_password(password, name, rules)
        if not sessions.use_setup_token(s, token, now):
            raise web.HTTPForbidden(text="wrong or expired setup token: restart `vbm up` for a new one")
        return users.add(s, name, Role.ADMIN, now, rules, password, display_name)

    user = await in_session(request, make, write=True)
    log.warning("first admin %r made with the setup token from %s", user.name, request.remote)
    return user


async def _start_session(request: web.Request, user: users.UserInfo, status: int) -> web.Response:
    token, found = await open_session(request, user)
    resp = json_response(_session_answer(user, found), status)
    set_session_cookie(resp, request, token)
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
    outcome = await try_login(request, body.name, body.password)
    if isinstance(outcome, users.LoginRefused):
        if outcome.retry_after is not None:
            raise web.HTTPTooManyRequests(
                text=outcome.public, headers={"Retry-After": str(int(outcome.retry_after) + 1)}
            )
        raise web.HTTPUnauthorized(text=outcome.public)
    return await _start_session(request, outcome, 201)


@routes.get("/api/v1/session")
@needs(Permission.SELF)
@op(
    "Who the caller is: the user, the role this request has, and the session or key it came with",
    answer=WhoAmI,
    no_cli="the caller of the API itself: on the command line the OS user works on the database",
)
async def whoami(request: web.Request) -> web.Response:
    me = caller(request)
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
    me = caller(request)
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
    me, ctx = caller(request), request.app[CTX]
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
    user = await first_admin(request, body.token, body.name, body.password, body.display_name)
    return await _start_session(request, user, 201)
