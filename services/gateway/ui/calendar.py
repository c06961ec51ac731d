"""The backup calendar (roadmap 7.1): a month of days, each with its tasks counted per status
(icon, number and word) and its planned runs outlined, or a week of VMs by day, each cell its
status and a link to its run; filters by job, vCenter and VM in the query string; a day opens its
panel (the day's VMs, each with a link to its run, and what is planned). Arrow keys move between
days (static/ui/calendar.js). Counted in SQL by shared/catalog/calendar.py, from the runs and
tasks GET /api/v1/runs lists; times in UTC."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import page, render
from shared.catalog import calendar, run_pages
from shared.db.models import Task, VCenterRow
from shared.model.access import Permission

routes = web.RouteTableDef()


def _vcenters(session: Session) -> list[str]:
    named = set(session.scalars(select(VCenterRow.name)))
    return sorted(named | set(session.scalars(select(Task.vcenter).distinct().limit(100))))


@routes.get("/calendar")
@needs(Permission.RUNS_READ)
@page
async def calendar_page(request: web.Request) -> web.Response:
    q = request.query
    now = request.app[CTX].clock()
    span = calendar.period(q.get("month"), q.get("week"), now.date())
    day = calendar.parse_day(q.get("day"), span)
    filters = calendar.check_filters(q)
    kept = {k: v for k, v in filters.items() if v}

    def link(**values: str) -> str:
        return "/calendar?" + urlencode({**values, **kept})

    def work(session: Session) -> dict[str, Any]:
        view = (calendar.month_view if span.kind == "month" else calendar.week_view)(
            session, span, now, filters
        )
        return {
            **view,
            "panel": calendar.day_panel(session, day, now, filters) if day else None,
            "jobs": run_pages.job_choices(session),
            "vcenters": _vcenters(session),
        }

    found = await in_session(request, work)
    at = {span.kind: span.key}
    this_week = now.date().isocalendar()
    return render(
        request,
        f"calendar/{span.kind}.html",
        **found,
        span=span,
        filters=filters,
        statuses=calendar.STATUSES,
        link=link,
        day_link=lambda d: link(**at, day=d.isoformat()) + "#day-panel",
        prev_url=link(**{span.kind: span.prev}),
        next_url=link(**{span.kind: span.next}),
        month_url=link(month=f"{span.start:%Y-%m}"),
        week_url=link(week=f"{this_week.year:04d}-W{this_week.week:02d}")
        if span.kind == "month" and span.start <= now.date() < span.end
        else link(week=f"{span.start.isocalendar().year:04d}-W{span.start.isocalendar().week:02d}"),
        today=now.date(),
    )
