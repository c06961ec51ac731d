"""`Idempotency-Key` on the `POST`s that start something (docs/api.md, "Retries"): the handler
gives its work as a function of a session returning an `Answer`; `answer_once` runs it once per
key of a caller on a route (shared/catalog/idempotency.py) and answers the first answer again to
a retry, marked `Idempotent-Replayed: true`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import identity_of
from services.gateway.common import CTX, in_session, json_response
from shared.catalog import idempotency
from shared.catalog.idempotency import HEADER, Answer, Claim

REPLAYED = "Idempotent-Replayed"
PURGE_EVERY = timedelta(minutes=10)
_purged: dict[str, datetime] = {}  # per database URL: when expired keys were last deleted


async def answer_once(
    request: web.Request, work: Callable[[Session], Answer], key: str | None = None, body: bytes | None = None
) -> web.Response:
    """Run `work` in one write transaction and answer it; with an `Idempotency-Key`, at most
    once for that key (422 names the header when the key is malformed or came with another
    body). Without the header the request is served as ever. A page's form gives its `key` and
    the `body` it stands for instead."""
    ctx = request.app[CTX]
    raw = request.headers.get(HEADER) if key is None else key  # a form's key: its hidden field
    if raw is None:
        return response(await in_session(request, work, write=True))
    key = idempotency.check_key(raw)
    identity = identity_of(request)
    claim = Claim(
        caller=identity.actor if identity else "-",
        route=f"{request.method} {request.path}",
        key=key,
        body_sha256=idempotency.body_hash(await request.read() if body is None else body),
    )
    now = ctx.clock()
    place = str(ctx.engine.url)
    if now - _purged.get(place, datetime.min.replace(tzinfo=now.tzinfo)) > PURGE_EVERY:
        _purged[place] = now
        await asyncio.to_thread(idempotency.purge, ctx.sessions, now)
    return response(await asyncio.to_thread(idempotency.once, ctx.sessions, claim, work, now))


def response(answer: Answer) -> web.Response:
    headers = {"Location": answer.location} if answer.location else {}
    if answer.replayed:
        headers[REPLAYED] = "true"
    return json_response(answer.body, answer.status, headers=headers)
