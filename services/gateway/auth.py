"""API key authentication: every request needs `X-API-Key`, except health and readiness.

First-run bootstrap: while no API key was ever created, `/api/v1` and `/api/v1/services` answer
without one (so `vbm up` on a fresh machine shows its status), with a warning in the log. Every
other endpoint always needs a key; create the first with `vbm apikey create NAME`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from services.gateway.common import CTX, in_session, problem
from shared.catalog import apikeys

log = logging.getLogger(__name__)

OPEN = frozenset({"/", "/healthz", "/readyz"})
BOOTSTRAP = frozenset({"/api/v1", "/api/v1/services"})


@dataclass
class KeyState:
    """Whether keys exist; once one does it always will (revoking keeps the row), so it is cached."""

    exist: bool = False
    warned: bool = False


AUTH = web.AppKey("auth", KeyState)
KEY = web.RequestKey("api_key", apikeys.KeyInfo)


async def _keys_exist(request: web.Request) -> bool:
    state = request.app[AUTH]
    if not state.exist:
        state.exist = await in_session(request, apikeys.any_exist)
    return state.exist


@web.middleware
async def require_key(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.path in OPEN or request.match_info.http_exception is not None:
        return await handler(request)  # open, or no such route: its 404/405 tells nothing secret
    presented = request.headers.get(apikeys.HEADER)
    if presented is None and request.path in BOOTSTRAP and not await _keys_exist(request):
        state = request.app[AUTH]
        if not state.warned:
            state.warned = True
            log.warning(
                "no API key exists: %s answers without one until the first is created"
                " (`vbm apikey create NAME`); every other endpoint needs a key",
                ", ".join(sorted(BOOTSTRAP)),
            )
        return await handler(request)
    key, why = await in_session(request, lambda s: apikeys.verify(s, presented))
    if key is None:
        return problem(
            401,
            "Unauthorized",
            f"{why}: send an API key in the {apikeys.HEADER} header"
            " (create one with `vbm apikey create NAME`)",
        )
    now = request.app[CTX].clock()
    if apikeys.needs_touch(key, now):
        try:
            await in_session(request, lambda s: apikeys.touch(s, key.id, now), write=True)
        except Exception as exc:  # bookkeeping only: a busy database must not refuse the request
            log.warning("could not record the use of API key %s: %s", key.name, exc)
    request[KEY] = key
    return await handler(request)
