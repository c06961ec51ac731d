"""The audit log page: the records newest first with the filters of GET /api/v1/audit in the
query string (services/gateway/audit.py's `filters_of`), paged by its cursor, the hash chain's
verification (shared/catalog/audit_chain.py) and export links to the API's csv/jsonl route."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.audit import FILTERS, filters_of
from services.gateway.common import MAX_ROW_ID, in_session, query_int
from services.gateway.ui.render import page, render
from shared.catalog import audit, audit_chain
from shared.errors import Invalid
from shared.model.access import Permission

routes = web.RouteTableDef()

PAGE_SIZE = 50


@routes.get("/audit")
@needs(Permission.AUDIT_READ)
@page
async def audit_page(request: web.Request) -> web.Response:
    if "format" in request.query:
        raise Invalid("format", "the page is HTML: export from /api/v1/audit?format=csv|jsonl", where="query")
    f = filters_of(request)
    cursor = query_int(request, "cursor", 0, 1, MAX_ROW_ID) or None
    limit = query_int(request, "limit", PAGE_SIZE, 1, 500)

    def work(s: Session) -> tuple[dict[str, Any], audit_chain.Verdict]:
        return audit.page(s, f, limit=limit, cursor=cursor), audit_chain.verify(s)

    found, chain = await in_session(request, work)
    chosen = {k: request.query[k] for k in FILTERS if request.query.get(k)}
    query = urlencode(chosen)
    return render(
        request,
        "audit/audit.html",
        found=found,
        chain=chain,
        chosen=chosen,
        first_page="/audit" + (f"?{query}" if query else ""),
        next_page=(
            "/audit?" + urlencode({**chosen, "cursor": found["next_cursor"]})
            if found["next_cursor"]
            else None
        ),
        export="/api/v1/audit?" + urlencode(chosen),
        paged=cursor is not None,
    )
