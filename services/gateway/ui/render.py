"""What every page of the web UI shares: the `@page` mark, the Jinja2 environment (templates under
services/gateway/templates, autoescaped), and `render`, which gives each template who is looking
(`me`), what their role may do (`can`), the session's CSRF token and the navigation.

A page is a route like any other: `@needs` declares its permission, and the `authorize`
middleware checks it (services/gateway/auth.py); `@page` only says that it answers HTML for
people, so that a missing identity is a redirect to the login page, an error is an HTML page,
and the OpenAPI document (which describes the REST API) leaves it out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from services.gateway.access import IDENTITY
from services.gateway.common import PROBLEM
from shared import __version__
from shared.model.access import Permission, allows
from shared.model.units import human_bytes

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__vbm_page__"
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CSRF = web.RequestKey("csrf_token", str)  # the session's CSRF token, set by the authorize middleware
ENV = web.AppKey("jinja", jinja2.Environment)

# The sidebar: (path, label, the permission that shows it)
NAVIGATION = (
    ("/dashboard", "Dashboard", Permission.STATUS_READ),
    ("/vms", "VMs", Permission.VMS_READ),
    ("/jobs", "Jobs", Permission.JOBS_READ),
    ("/runs", "Runs", Permission.RUNS_READ),
    ("/backups", "Backups", Permission.BACKUPS_READ),
    ("/calendar", "Calendar", Permission.RUNS_READ),
    ("/restore", "Restore", Permission.RESTORES_RUN),
    ("/restores", "Restores", Permission.RESTORES_READ),
    ("/alerts", "Alerts", Permission.ALERTS_READ),
    ("/storage", "Storage", Permission.REPOSITORIES_READ),
    ("/notifications", "Notifications", Permission.NOTIFICATIONS_READ),
    ("/settings", "Settings", Permission.SETTINGS_WRITE),
    ("/settings/users", "Users", Permission.USERS_READ),
    ("/settings/keys", "API keys", Permission.SELF),
    ("/audit", "Audit", Permission.AUDIT_READ),
)


def list_url(path: str, filters: dict[str, str], cursor: str | None) -> str:
    """A list page with its filters (the empty ones left out), at `cursor` (None: the first page)."""
    kept = {k: v for k, v in filters.items() if v} | ({"cursor": cursor} if cursor else {})
    return path + ("?" + urlencode(kept) if kept else "")


def page(handler: F) -> F:
    """Mark a handler as a page of the web UI (see the module's docstring)."""
    setattr(handler, _ATTRIBUTE, True)
    return handler


def is_page(handler: object) -> bool:
    return bool(getattr(handler, _ATTRIBUTE, False))


def wants_html(request: web.Request) -> bool:
    """Whether an error on this request should be a page: a UI route, or a browser's request
    outside the REST API and the static files."""
    if request.match_info.http_exception is None and is_page(request.match_info.handler):
        return True
    path = request.path
    if path.startswith(("/api/", "/static/")) or path in ("/healthz", "/readyz"):
        return False
    return "text/html" in request.headers.get("Accept", "")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.StrictUndefined,  # a misspelt name is an error in the tests, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bytes"] = lambda n: "-" if n is None else human_bytes(int(n))
    env.filters["utc"] = _utc
    env.globals["version"] = __version__
    return env


def _utc(value: Any) -> str:
    """An ISO 8601 UTC time (the `datetime` of a <time>), from a datetime or an ISO string."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return str(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def render(request: web.Request, template: str, http_status: int = 200, **values: Any) -> web.Response:
    """The page `template` with `values`, for the caller of `request`."""
    who = request.get(IDENTITY)

    def can(permission: str) -> bool:
        return who is not None and allows(who.role, Permission(permission))

    nav = [(path, label) for path, label, needed in NAVIGATION if can(needed.value)]
    here = request.path  # the entry of this page: the longest that holds it (/settings/users, not /settings)
    current = max((p for p, _ in nav if here == p or here.startswith(p + "/")), key=len, default=None)
    html = (
        request.app[ENV]
        .get_template(template)
        .render(
            me=who,
            can=can,
            nav=nav,
            here=here,
            current=current,
            csrf_token=request.get(CSRF, ""),
            **values,
        )
    )
    return web.Response(
        text=html,
        status=http_status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP},
    )


# Everything from the gateway itself: no CDN, no inline script (the pages have none), styles
# from the gateway's own file; connections (htmx, the event stream) to this origin only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def login_redirect(request: web.Request) -> web.HTTPSeeOther:
    """Where a page sends someone not logged in: the login page, back here afterwards."""
    return web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")


def safe_next(target: str | None) -> str:
    """A local path to go on to after logging in (never another site: `//evil` or `https:`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    return target


@web.middleware
async def html_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A person's browser gets an error as a page that says what went wrong and where to go;
    a client of the REST API gets the same problem as application/problem+json."""
    response = await handler(request)
    if response.status < 400 or response.content_type != PROBLEM or not wants_html(request):
        return response
    try:
        found = json.loads(bytes(response.body))  # type: ignore[attr-defined]
    except (ValueError, TypeError, AttributeError):
        return response
    page_answer = render(
        request,
        "error.html",
        http_status=response.status,
        title=str(found.get("title", response.reason)),
        detail=str(found.get("detail", "")),
        code=response.status,
    )
    for name in ("Retry-After", "Allow", "X-Request-Id"):
        if name in response.headers:
            page_answer.headers[name] = response.headers[name]
    return page_answer
