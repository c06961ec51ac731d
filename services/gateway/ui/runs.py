"""The Runs pages: every run, newest first, filtered and paged in the query string, running rows
live; and a run's own page with its state and outcome, per-VM rows with their phases, bytes,
rate and ETA, the snapshot clean-up, the alerts, the log appended live, and Cancel.

They read through the catalog functions of GET /api/v1/runs, /api/v1/runs/{id} and its log
(shared/catalog/runs.py, with shared/catalog/run_pages.py around them) and cancel through the
one of POST /api/v1/runs/{id}/cancel. Live updates come from the browser's EventSource on
/api/v1/events?run=<id> (static/ui/runs.js), which replaces the panel (/runs/{id}/panel) whole on
every (re)connect and state change, so nothing repeats; without JavaScript the page shows the
run as it was when loaded, with a Refresh link."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.api_jobs import publish_cancels
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import list_url, page, render
from shared.catalog import jobs as jobstore
from shared.catalog import run_pages
from shared.catalog import runs as runstore
from shared.catalog.listing import Window
from shared.errors import NotFound
from shared.model.access import Permission

routes = web.RouteTableDef()

TRIGGERS = ("schedule", "manual", "api")
PAGE_FILTERS = ("job", "state", "trigger")


def _listing(request: web.Request) -> Any:
    """The runs the query string asks for (Invalid, a 422 page, for an odd value)."""
    q = request.query
    window = Window.parse(q, PAGE_FILTERS, default_limit=25, max_limit=200)
    run_pages.check_state(q.get("state"))
    now = request.app[CTX].clock()

    def work(session: Session) -> dict[str, Any]:
        found = runstore.list_runs(
            session,
            window,
            job=q.get("job") or None,
            state=q.get("state") or None,
            trigger=q.get("trigger") or None,
        )
        return {
            "runs": run_pages.list_rows(session, found.rows, now),
            "total": found.total,
            "next_cursor": found.next_cursor,
            "jobs": run_pages.job_choices(session),
        }

    return in_session(request, work)


def _filters(request: web.Request) -> dict[str, str]:
    return {name: request.query.get(name, "") for name in PAGE_FILTERS}


def _url(request: web.Request, cursor: str | None) -> str:
    return list_url("/runs", _filters(request), cursor)


@routes.get("/runs")
@needs(Permission.RUNS_READ)
@page
async def runs_page(request: web.Request) -> web.Response:
    found = await _listing(request)
    return render(
        request,
        "runs/list.html",
        **found,
        filters=_filters(request),
        states=run_pages.RUN_STATES,
        triggers=TRIGGERS,
        request_query=request.query_string,
        first_url=_url(request, None) if request.query.get("cursor") else None,
        next_url=_url(request, found["next_cursor"]) if found["next_cursor"] else None,
    )


@routes.get("/runs/rows")
@needs(Permission.RUNS_READ)
@page
async def runs_rows(request: web.Request) -> web.Response:
    """The list's rows alone, for the live refresh of the table (the same query string)."""
    found = await _listing(request)
    return render(request, "runs/_rows.html", **found, filters=_filters(request))


def _run_id(request: web.Request) -> str:
    """The run named in the path; NotFound (404) for what no run id can be (a control
    character, which PostgreSQL would refuse, or longer than an id's column)."""
    run_id = request.match_info["run_id"]
    if len(run_id) > 128 or not run_id.isprintable():
        raise NotFound(f"no run {run_id[:40]!r}")
    return run_id


async def _run(request: web.Request) -> dict[str, Any]:
    run_id = _run_id(request)
    now = request.app[CTX].clock()
    return await in_session(request, lambda s: run_pages.run_page(s, run_id, now))


@routes.get("/runs/{run_id}")
@needs(Permission.RUNS_READ)
@page
async def run_page(request: web.Request) -> web.Response:
    run = await _run(request)
    log = await in_session(request, lambda s: runstore.log_view(s, run["id"]))
    return render(request, "runs/detail.html", run=run, lines=log["lines"], steps=run_pages.STEPS)


@routes.get("/runs/{run_id}/panel")
@needs(Permission.RUNS_READ)
@page
async def run_panel(request: web.Request) -> web.Response:
    """The run's panel alone (state, outcome, per-VM rows, clean-up, alerts): what the page's
    script puts in place of the old one on every (re)connect and state change."""
    return render(request, "runs/_panel.html", run=await _run(request))


@routes.post("/runs/{run_id}/cancel")
@needs(Permission.JOBS_RUN)
@page
async def cancel_form(request: web.Request) -> web.Response:
    """Cancel, as POST /api/v1/runs/{id}/cancel does (409 page when the run has ended)."""
    run_id = _run_id(request)
    await in_session(request, lambda s: runstore.run_view(jobstore.cancel_run(s, run_id)), write=True)
    await publish_cancels(request, [run_id])
    raise web.HTTPSeeOther(f"/runs/{run_id}")
