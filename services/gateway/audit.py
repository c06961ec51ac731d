"""The gateway's audit trail (docs/design.md, "Audit log"): every state-changing request is
recorded after its handler ran, and `GET /api/v1/audit` reads the log.

`audit_trail` records each POST, PUT, PATCH and DELETE (GET, HEAD and OPTIONS change nothing):
who (the identity's actor, `-` when nobody was identified), from where, the route (`login` and
`logout` for /api/v1/session, naming the user who tried), the target (from the route's
parameters, the created resource's Location, or the query), the JSON body with secrets masked,
the result (`ok`, or the status, title and detail of the error, refusals included) and the
request id (the caller's sane `X-Request-Id`, else a new one; every answer carries it, set by
`tag_response`, an `on_response_prepare` signal). The record is written before the answer
leaves. If it cannot be written the change still stands (it was made): the gateway logs
`AUDIT RECORD NOT WRITTEN` as an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from services.gateway.access import identity_of, needs
from services.gateway.answers.alerts import AuditPage
from services.gateway.apidoc import choice, number, op, text
from services.gateway.common import CTX, MAX_ROW_ID, PROBLEM, in_session, json_response, query_int
from shared.catalog import audit
from shared.errors import Invalid, StoreError
from shared.model.access import Permission

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

HEADER = "X-Request-Id"
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REQUEST_ID = web.RequestKey("request_id", str)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,128}$")
# route parameters and query parameters that name what a request acts on, and how the log names it
TARGETS = (
    ("job_id", "job"), ("run_id", "run"), ("rp_id", "restore_point"), ("restore_id", "restore"),
    ("alert_id", "alert"), ("report_id", "report"), ("vcenter", "vcenter"), ("key_id", "apikey"),
    ("user", "user"), ("username", "user"),
)  # fmt: skip
NAMED = {
    "POST /api/v1/session": "login", "DELETE /api/v1/session": "logout",
    "POST /login": "login", "POST /logout": "logout",  # the web UI's doors, named alike
}  # fmt: skip
QUERY_TARGETS = (("job", "job"), ("vm", "vm"), ("repository", "repository"))
COLLECTIONS = {
    "jobs": "job", "restores": "restore", "vcenters": "vcenter", "users": "user", "keys": "apikey",
    "mounts": "mount", "locations": "location", "repositories": "location", "channels": "channel",
}  # fmt: skip


def actor_of(request: web.Request) -> str:
    who = identity_of(request)
    return who.actor if who is not None else "-"


def target_of(
    request: web.Request, response: web.StreamResponse | web.HTTPException | None, body: Any
) -> str:
    info = request.match_info
    found = [f"{kind}:{info[name]}" for name, kind in TARGETS if name in info]
    if "name" in info:  # /api/v1/vcenters/{name}, /settings/mounts/{name}: named by its collection
        collection = request.path.removeprefix("/api/v1/").removeprefix("/settings/").split("/", 1)[0]
        found.append(f"{COLLECTIONS.get(collection, collection.rstrip('s') or 'object')}:{info['name']}")
    if response is not None and response.status < 400:  # what it made: the API's or a page's Location
        created = re.fullmatch(r"(?:/api/v1)?/([a-z]+)/([^/?#]+)", response.headers.get("Location", ""))
        if created and created[1] in COLLECTIONS and created[2] not in ("new", "list"):
            made = f"{COLLECTIONS[created[1]]}:{created[2]}"
            found += [] if made in found else [made]
    found += [f"{kind}:{request.query[name]}" for name, kind in QUERY_TARGETS if request.query.get(name)]
    if isinstance(body, dict) and isinstance(body.get("restore_point_id"), str):
        found.append(f"restore_point:{body['restore_point_id']}")
    return " ".join(found)


async def _params(request: web.Request) -> tuple[Any, dict[str, Any]]:
    """(the body as JSON or None, the record's parameters: query and body, masked when stored)."""
    params: dict[str, Any] = {}
    if request.query:
        params["query"] = dict(request.query)
    body: Any = None
    if request.body_exists:
        try:
            raw = await request.read()
        except web.HTTPException:  # too large: refused, and not stored
            params["body"] = "(larger than the gateway accepts)"
            return None, params
        if request.content_type == "application/x-www-form-urlencoded":  # a web UI form
            form = await request.post()
            body = {k: v for k, v in form.items() if isinstance(v, str)}
            params["body"] = body
            return body, params
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            params["body"] = f"({len(raw)} bytes, not JSON)"  # never the raw body
        else:
            params["body"] = body
    return body, params


def _outcome(response: web.StreamResponse) -> str:
    if response.status < 400:
        return "ok"
    outcome = f"{response.status} {response.reason}"
    if (
        isinstance(response, web.Response)
        and response.body
        and response.content_type
        in (
            "application/json",
            PROBLEM,
        )
    ):
        try:
            detail = json.loads(bytes(response.body)).get("detail")  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError):
            detail = None
        if isinstance(detail, str) and detail:
            outcome += f": {detail}"
    return outcome


def _failure(exc: Exception) -> str:
    if isinstance(exc, web.HTTPException) and exc.status < 400:
        return "ok"  # a redirect raised as the answer (a web UI form's 303): it worked
    if isinstance(exc, web.HTTPException):
        text = exc.text or ""
        return f"{exc.status} {exc.reason}" + (
            f": {text}" if text and text != f"{exc.status}: {exc.reason}" else ""
        )
    if isinstance(exc, StoreError):
        return f"{exc.status} {exc.title}: {exc}"
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        return f"422 Unprocessable Entity: {where}: {err['msg']}"
    return "500 Internal Server Error"


async def _record(
    request: web.Request,
    response: web.StreamResponse | web.HTTPException | None,
    outcome: str,
    request_id: str,
) -> None:
    try:
        await _write(request, response, outcome, request_id)
    except Exception:  # the change stands; the missing record is said loudly
        log.exception("AUDIT RECORD NOT WRITTEN: %s %s", request.method, request.path)


async def _write(
    request: web.Request,
    response: web.StreamResponse | web.HTTPException | None,
    outcome: str,
    request_id: str,
) -> None:
    route = request.match_info.route.resource
    action = f"{request.method} {route.canonical if route is not None else request.path}"
    body, params = await _params(request)
    target = target_of(request, response, body)
    if action in NAMED:  # a login names who tried (the password is masked with the rest)
        action = NAMED[action]
        who = body.get("user") or body.get("username") or body.get("name") if isinstance(body, dict) else None
        target = f"user:{who}" if isinstance(who, str) else target
    record = {
        "actor": actor_of(request), "source": request.remote or "-", "action": action, "target": target,
        "params": params, "result": outcome, "request_id": request_id,
    }  # fmt: skip
    await asyncio.to_thread(audit.try_append, request.app[CTX].sessions, **record)


@web.middleware
async def audit_trail(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    given = request.headers.get(HEADER, "")
    request_id = given if _SANE_ID.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except Exception as exc:
        if request.method in CHANGES:  # a page's redirect (303 to what it made) is an answer too
            answered = exc if isinstance(exc, web.HTTPException) else None
            await _record(request, answered, _failure(exc), request_id)
        raise
    if request.method in CHANGES:
        await _record(request, response, _outcome(response), request_id)
    return response


async def tag_response(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every answer says its request id, errors the outer middleware
    made from an exception and streamed answers included."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers[HEADER] = request_id


FILTERS = ("user", "action", "target", "vm", "result", "since", "until")
KNOWN = frozenset({*FILTERS, "limit", "cursor", "offset", "format"})


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(name, f"{raw!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def filters_of(request: web.Request) -> audit.Filters:
    unknown = sorted(set(request.query) - KNOWN)
    if unknown:
        raise Invalid(unknown[0], f"unknown query parameter (known: {', '.join(sorted(KNOWN))})")
    result = request.query.get("result") or None
    if result not in (None, "ok", "error"):
        raise Invalid("result", f"{result!r} is neither ok nor error")
    text = {k: request.query.get(k) or None for k in ("user", "action", "target", "vm")}
    for name, value in text.items():
        if value is not None and (len(value) > 1024 or "\x00" in value):
            raise Invalid(name, "longer than 1024 characters or holds a NUL")
    since, until = _time(request, "since"), _time(request, "until")
    if since is not None and until is not None and until <= since:
        raise Invalid("until", "must be later than since")
    return audit.Filters(result=result, since=since, until=until, **text)


QUERY = (
    text("user", "who: a user (their keys too), os:NAME, system:SERVICE or -"),
    text("action", "part of the action, e.g. DELETE, login, prune"),
    text("target", "what, exactly (job:nightly), or a prefix ending in * (job:*)"),
    text("vm", "part of a VM's name or moref in the target or the parameters"),
    choice("result", "only those that succeeded, or those refused or failed", ("ok", "error")),
    text("since", "only records at or after this time (ISO 8601)", format="date-time"),
    text("until", "only records before this time (ISO 8601, later than since)", format="date-time"),
    number("limit", "records in a page (default 100; an export: all)", 1, 1000),
    number("cursor", "the next_cursor of the page before: the records older than it", 1, MAX_ROW_ID),
    number("offset", "records to skip", 0, 10**9),
    choice(
        "format", "json (a page), or an export of everything selected: csv or jsonl", ("json", "csv", "jsonl")
    ),
)


@routes.get("/api/v1/audit")
@needs(Permission.AUDIT_READ)
@op(
    "The audit log, newest first: a page, or an export (format=csv or jsonl)",
    query=QUERY,
    answer=AuditPage,
    other_media=("text/csv", "application/x-ndjson"),
    cli="vbm audit ls --json",
)
async def get_audit(request: web.Request) -> web.StreamResponse:
    """The audit log, newest first: filters, a page (`limit`, `cursor` or `offset`), or an
    export of everything selected (`format=csv` or `jsonl`, streamed)."""
    f = filters_of(request)
    form = request.query.get("format", "json")
    if form not in ("json", "csv", "jsonl"):
        raise Invalid("format", f"{form!r} is not json, csv or jsonl")
    cursor = query_int(request, "cursor", 0, 1, MAX_ROW_ID) or None
    offset = query_int(request, "offset", 0, 0, 10**9)
    if form != "json":
        limit = query_int(request, "limit", 0, 1, 10**9) or None
        return await _export(request, f, form, limit, cursor)
    limit = query_int(request, "limit", 100, 1, 1000)

    return json_response(
        await in_session(request, lambda s: audit.page(s, f, limit=limit, cursor=cursor, offset=offset))
    )


async def _export(
    request: web.Request, f: audit.Filters, form: str, limit: int | None, cursor: int | None
) -> web.StreamResponse:
    kind = "text/csv" if form == "csv" else "application/x-ndjson"
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{kind}; charset=utf-8",
            "Content-Disposition": f'attachment; filename="vbm-audit.{form}"',
        }
    )
    await response.prepare(request)
    if form == "csv":
        await response.write(audit.csv_line(audit.COLUMNS).encode())
    left = limit
    while left is None or left > 0:
        size = 500 if left is None else min(500, left)
        rows = await in_session(request, lambda s: audit.query(s, f, limit=size, cursor=cursor))  # noqa: B023
        for row in rows:
            await response.write(audit.export_line(row, form).encode())
        if len(rows) < size:
            break
        cursor = rows[-1].id
        left = None if left is None else left - len(rows)
    await response.write_eof()
    return response
