"""The Storage page: per repository, used against free over time with the alert threshold and
the day the trend crosses it, logical against stored (deduplication and compression); sizes per
VM and per job, growth per VM, change rate per VM and what a prune would free
(shared/catalog/analytics.py). Charts are drawn by static/ui/storage.js with the vendored
Chart.js from a JSON data island; each chart's numbers are also a table and a CSV download."""

from __future__ import annotations

import csv
import io

from aiohttp import web

from services.gateway.access import needs
from services.gateway.common import CTX, in_session, query_int
from services.gateway.ui.render import page, render
from shared.catalog import analytics
from shared.errors import Invalid
from shared.model.access import Permission

routes = web.RouteTableDef()


def _days(request: web.Request) -> int:
    for name in request.query:
        if name != "days":
            raise Invalid(name, "unknown query parameter: this page takes only days", where="query")
    return query_int(request, "days", 90, 2, 366)


async def _data(request: web.Request) -> dict[str, object]:
    days = _days(request)
    ctx = request.app[CTX]
    now = ctx.clock()
    return await in_session(request, lambda s: analytics.storage(s, ctx.settings, now, days))


@routes.get("/storage")
@needs(Permission.REPOSITORIES_READ)
@page
async def storage(request: web.Request) -> web.Response:
    data = await _data(request)
    return render(request, "storage/page.html", d=data, charts=analytics.CHARTS)


@routes.get("/storage/{chart}.csv")
@needs(Permission.REPOSITORIES_READ)
@page
async def chart_csv(request: web.Request) -> web.Response:
    chart = request.match_info["chart"]
    if chart not in analytics.CHARTS:
        raise web.HTTPNotFound(text=f"no chart {chart!r}: one of {', '.join(analytics.CHARTS)}")
    data = await _data(request)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(analytics.table(data, chart))
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="storage-{chart}.csv"',
            "Cache-Control": "no-store",
        },
    )
