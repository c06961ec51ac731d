"""What every gateway module shares: the app's typed state keys and JSON responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session

from shared.catalog import locations as locstore
from shared.catalog import vcenters
from shared.errors import Invalid
from shared.repo.locations import CredentialsFor
from shared.runtime.service import Context
from shared.runtime.status import Presence
from shared.settings import Settings

T = TypeVar("T")

CTX = web.AppKey("ctx", Context)
PRESENCE = web.AppKey("presence", Presence)  # the services seen on the bus (their heartbeats)


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, default=str))


PROBLEM = "application/problem+json"  # RFC 9457


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """An RFC 9457 problem: `type` (about:blank: the status says it), `title`, `status`, `detail`
    in words, and `errors` naming each invalid field and where it was (body, query, path,
    header); `extra` adds members of the route's own (e.g. a connection test's result)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return web.json_response(
        body, status=status, content_type=PROBLEM, dumps=lambda d: json.dumps(d, default=str)
    )


def field_error(field: str, where: str, detail: str) -> dict[str, str]:
    return {"field": field, "in": where, "detail": detail}


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


async def with_vcenters(request: web.Request) -> Settings:
    """The settings with the vCenters added through the API too (shared/catalog/vcenters.py)."""
    settings = request.app[CTX].settings
    return await in_session(request, lambda s: vcenters.effective(s, settings))


def credentials_for(request: web.Request) -> CredentialsFor:
    """What a location is opened with: a stored location's credentials, else the settings'
    (Misconfigured, a RepoError, when the stored ones cannot be decrypted)."""
    ctx = request.app[CTX]
    return locstore.lookup(ctx.settings, ctx.sessions)


MAX_DEPTH = 32  # objects and arrays nested deeper than this are refused (no body needs more)


async def read_json(request: web.Request) -> Any:
    """The request body as JSON: 400 when it is not JSON or is nested absurdly deep, 422 when a
    string holds what no database or file name can (a lone UTF-16 surrogate, a NUL). The body's
    size is bounded by the app (`client_max_size`, 413 beyond it)."""
    raw = await request.read()
    try:
        data = json.loads(raw)
    except RecursionError:
        raise web.HTTPBadRequest(
            reason="Bad Request", text=f"body is nested deeper than {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:
        raise web.HTTPBadRequest(reason="Bad Request", text=f"body is not valid JSON: {exc}") from None
    _check_json(data, "", 0)
    return data


def _check_json(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise web.HTTPBadRequest(reason="Bad Request", text=f"body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        bad = bad_character(value)
        if bad:
            raise Invalid(where or "(body)", bad)
    elif isinstance(value, dict):
        for key, item in value.items():
            bad = bad_character(key)
            if bad:
                raise Invalid(f"{where}.{key!r}".lstrip("."), f"a key: {bad}")
            _check_json(item, f"{where}.{key}" if where else key, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{where}.{i}" if where else str(i), depth + 1)


def check_parameters(request: web.Request) -> None:
    """422 naming a query or path parameter that holds what no database or name can (a NUL, a lone
    surrogate), before any handler: PostgreSQL refuses a NUL in text with an error, not a miss."""
    for where, values in (("query", request.query), ("path", request.match_info)):
        for name, value in values.items():
            for text, field in ((name, repr(name)), (value, name)):
                bad = bad_character(text)
                if bad:
                    raise Invalid(field, bad, where=where)


def bad_character(text: str) -> str | None:
    """Why `text` cannot be stored or used as a name, or None: lone surrogates and NUL."""
    if "\x00" in text:
        return "contains a NUL character"
    if any("\ud800" <= c <= "\udfff" for c in text):
        return "contains a lone UTF-16 surrogate (not a character): send valid Unicode"
    return None


# The largest row id a query may name: an Integer column is 32 bits on PostgreSQL, where a larger
# value is not "no such row" but an error ("integer out of range").
MAX_ROW_ID = 2**31 - 1


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in [low, high]; 422 names it otherwise (ASCII digits only:
    `"²".isdigit()` is true in Python, `int("²")` is not)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise Invalid(name, f"{raw!r} is not a whole number from {low} to {high}", where="query")
    return int(raw)


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (true/false/1/0/yes/no); 422 names it when it is neither."""
    value = request.query.get(name, "false").strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise Invalid(name, f"{value!r} is not true or false", where="query")
