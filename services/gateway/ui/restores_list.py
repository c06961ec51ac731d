"""The Restores list: every restore, newest first, with its state, kind, VM, restore point,
target, times, duration and who asked; filtered (state, kind, VM) and paged in the query string;
running rows live. It reads through the catalog function of GET /api/v1/restores
(`restores.list_restores`, with shared/catalog/restore_pages.py around it). Live updates come from
the browser's EventSource on /api/v1/events?type=restore,progress (static/ui/restores.js): a
progress sample moves its row's bar, a state change (or a reconnect) reloads the rows
(/restores/rows, the same query string); without JavaScript the list shows the restores as
loaded, with a Refresh link. Needs restores:read; the one action shown (Restore a VM, the wizard)
only to a role that may restore."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import list_url, page, render
from shared.catalog import restore_pages, restores
from shared.catalog.listing import Window
from shared.model.access import Permission

routes = web.RouteTableDef()

PAGE_FILTERS = ("state", "mode", "vm")


def _filters(request: web.Request) -> dict[str, str]:
    return {name: request.query.get(name, "")[:200] for name in PAGE_FILTERS}


def _listing(request: web.Request) -> Any:
    """The restores the query string asks for (Invalid, a 422 page, for an odd value)."""
    window = Window.parse(request.query, PAGE_FILTERS, default_limit=25, max_limit=200)
    f = _filters(request)
    restore_pages.check_filters(f["state"], f["mode"])
    now = request.app[CTX].clock()

    def work(session: Session) -> dict[str, Any]:
        found = restores.list_restores(
            session, window, state=f["state"] or None, mode=f["mode"] or None, vm=f["vm"] or None
        )
        return {
            "restores": restore_pages.list_rows(session, found.rows, now),
            "total": found.total,
            "next_cursor": found.next_cursor,
        }

    return in_session(request, work)


def _url(request: web.Request, cursor: str | None) -> str:
    return list_url("/restores", _filters(request), cursor)


@routes.get("/restores")
@needs(Permission.RESTORES_READ)
@page
async def restores_page(request: web.Request) -> web.Response:
    found = await _listing(request)
    return render(
        request,
        "restore/list.html",
        **found,
        filters=_filters(request),
        states=restore_pages.STATES,
        kinds=restore_pages.KINDS,
        request_query=request.query_string,
        first_url=_url(request, None) if request.query.get("cursor") else None,
        next_url=_url(request, found["next_cursor"]) if found["next_cursor"] else None,
    )


@routes.get("/restores/rows")
@needs(Permission.RESTORES_READ)
@page
async def restores_rows(request: web.Request) -> web.Response:
    """The list's rows alone, for the live refresh of the table (the same query string)."""
    found = await _listing(request)
    return render(request, "restore/_rows.html", **found, filters=_filters(request))
