"""What every gateway module shares: the app's typed state keys and JSON responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session

from shared.runtime import Context

T = TypeVar("T")

CTX = web.AppKey("ctx", Context)


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, default=str))


def problem(status: int, title: str, detail: str) -> web.Response:
    return json_response({"status": status, "title": title, "detail": detail}, status)


async def in_session(request: web.Request, work: Callable[[Session], T], *, write: bool = False) -> T:
    """Run `work(session)` in a thread: one transaction, committed when `write` (else rolled back)."""
    ctx = request.app[CTX]

    def run() -> T:
        if write:
            with ctx.sessions.begin() as session:
                return work(session)
        with ctx.sessions() as session:
            return work(session)

    return await asyncio.to_thread(run)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 400 when it is not."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError:
        raise web.HTTPBadRequest(reason="Bad Request", text="body is not valid JSON") from None


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (true/false/1/0/yes/no); 422 names it when it is neither."""
    value = request.query.get(name, "false").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise web.HTTPUnprocessableEntity(text=f"{name}: {value!r} is not true or false")
