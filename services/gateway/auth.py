"""Who is calling, and may they: the one middleware that decides access (docs/design.md, "Access").

Each route declares the permission it needs (`@needs`, services/gateway/access.py). A request
names its caller by an `X-API-Key` header (scripts; `Authorization: Bearer <key>` too, as
Prometheus sends it) or a `vbm_session` cookie (browsers; a state-changing request must then
repeat the session's CSRF token in `X-CSRF-Token`). Then: 401 without a valid identity, 403 when
the caller's role lacks the permission.

First-run bootstrap: while no user and no API key exist, the routes that need only
`status:read` (`/api/v1/services`) answer anyone, so that `vbm up` on a fresh machine shows its
status; everything else needs an identity. `vbm up` prints a one-time setup token to make the
first admin with (`POST /api/v1/setup`), or run `vbm user add NAME --role admin`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from services.gateway.access import IDENTITY, Identity, declared
from services.gateway.common import CTX, in_session, problem
from services.gateway.ui.render import CSRF, is_page, login_redirect
from shared.catalog import apikeys, sessions, users
from shared.model.access import PUBLIC, Permission, allows

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class AuthState:
    """Whether anyone exists; once someone does, someone always will (rows are kept), so cached."""

    anyone: bool = False
    warned: bool = False


AUTH = web.AppKey("auth", AuthState)
KEY = web.RequestKey("api_key", apikeys.KeyInfo)


def _anyone(s: object) -> bool:
    return apikeys.any_exist(s) or users.any_exist(s)  # type: ignore[arg-type]


async def _anyone_exists(request: web.Request) -> bool:
    state = request.app[AUTH]
    if not state.anyone:
        state.anyone = await in_session(request, _anyone)
    return state.anyone


def unauthorized(why: str) -> web.Response:
    return problem(
        401,
        "Unauthorized",
        f"{why}: log in (POST /api/v1/session) or send an API key in the {apikeys.HEADER} header"
        " (create one with `vbm apikey create NAME`)",
    )


@web.middleware
async def authorize(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.match_info.http_exception is not None:
        return await handler(request)  # no such route: its 404/405 tells nothing secret
    needed = declared(request.match_info.handler)
    if needed is None:
        log.error("route %s %s declares no permission: refused", request.method, request.path)
        return problem(500, "Internal Server Error", "this route declares no permission (a defect): refused")
    if needed == PUBLIC:
        return await handler(request)
    assert isinstance(needed, Permission)
    identity, why = await _identify(request)
    if identity is None:
        if is_page(request.match_info.handler):
            raise login_redirect(request)  # which leads to the setup page while nobody exists
        if needed == Permission.STATUS_READ and not await _anyone_exists(request):
            _warn_bootstrap(request)
            return await handler(request)
        return unauthorized(why)
    request[IDENTITY] = identity
    if not allows(identity.role, needed):
        return problem(
            403,
            "Forbidden",
            f"{identity.actor} is {identity.role.value}: {request.method} {request.path} needs"
            f" {needed.value}, which that role does not have",
        )
    return await handler(request)


def _warn_bootstrap(request: web.Request) -> None:
    state = request.app[AUTH]
    if not state.warned:
        state.warned = True
        log.warning(
            "no user and no API key exist: %s answers anyone until the first is made (the setup"
            " token `vbm up` printed, or `vbm user add NAME --role admin`)",
            request.path,
        )


async def _identify(request: web.Request) -> tuple[Identity | None, str]:
    presented = request.headers.get(apikeys.HEADER)
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    if presented is None and scheme.lower() == "bearer" and bearer.strip():
        presented = bearer.strip()  # the same key, as Prometheus' `authorization:` sends it
    if presented is not None:
        return await _by_key(request, presented)
    cookie = request.cookies.get(sessions.COOKIE)
    if cookie is not None:
        return await _by_session(request, cookie)
    return None, f"missing {apikeys.HEADER} header or session cookie"


async def _by_key(request: web.Request, presented: str) -> tuple[Identity | None, str]:
    now = request.app[CTX].clock()
    key, why = await in_session(request, lambda s: apikeys.verify(s, presented, now))
    if key is None:
        return None, why
    if apikeys.needs_touch(key, now):
        try:
            await in_session(request, lambda s: apikeys.touch(s, key.id, now), write=True)
        except Exception as exc:  # bookkeeping only: a busy database must not refuse the request
            log.warning("could not record the use of API key %s: %s", key.name, exc)
    request[KEY] = key
    return Identity(user=key.owner, role=key.role, via="key", key_id=key.id), ""


async def _csrf_of(request: web.Request) -> str | None:
    """The CSRF token a change repeats: the header, or for a page's form (which works without
    JavaScript) its `csrf_token` field."""
    header = request.headers.get(sessions.CSRF_HEADER)
    if header is not None or not is_page(request.match_info.handler):
        return header
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return None
    field = (await request.post()).get("csrf_token")
    return field if isinstance(field, str) else None


async def _by_session(request: web.Request, token: str) -> tuple[Identity | None, str]:
    ctx = request.app[CTX]
    now, rules = ctx.clock(), ctx.settings.security
    found, why = await in_session(request, lambda s: sessions.lookup(s, token, now, rules))
    if found is None:
        return None, why
    if request.method not in SAFE_METHODS and not sessions.csrf_ok(found, await _csrf_of(request)):
        raise web.HTTPForbidden(
            text=f"missing or wrong {sessions.CSRF_HEADER} header: a change made with a session cookie"
            " must repeat the session's CSRF token (given at login and in GET /api/v1/session)"
        )
    request[CSRF] = found.csrf_token
    if sessions.needs_touch(found, now):
        try:
            await in_session(request, lambda s: sessions.touch(s, found.id, now), write=True)
        except Exception as exc:
            log.warning("could not record the use of a session of %s: %s", found.user, exc)
    return Identity(user=found.user, role=found.role, via="session", session_id=found.id), ""
