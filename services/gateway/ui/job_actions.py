"""The Jobs pages' actions: run now, cancel, enable or disable, and delete with the job's name
typed, each a form that works without JavaScript and does what the REST API's route does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from services.gateway.access import needs
from services.gateway.api_jobs import jobs_changed, publish_cancels, starter
from services.gateway.common import CTX, in_session
from services.gateway.idempotency import answer_once
from services.gateway.ui.jobs import job_of
from services.gateway.ui.render import page, render
from shared.catalog import job_pages
from shared.catalog import jobs as jobstore
from shared.errors import Conflict
from shared.model.access import Permission

routes = web.RouteTableDef()


def _back(form: Mapping[str, Any]) -> str:
    """Where an action returns: the list with the filters it was started from."""
    back = form.get("back")
    return back if isinstance(back, str) and back.startswith("/jobs") and "//" not in back else "/jobs"


def _refused(
    request: web.Request, status: int, title: str, message: str, run_id: str | None = None
) -> web.Response:
    return render(request, "jobs/refused.html", status, title=title, message=message, run_id=run_id)


@routes.post("/jobs/{job_id}/run")
@needs(Permission.JOBS_RUN)
@page
async def run_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    job = await job_of(request)
    try:
        answer = await answer_once(request, starter(ctx, job["id"]))
    except Conflict as exc:
        busy = await in_session(request, lambda s: [r.id for r in jobstore.unfinished_runs(s, job["id"])])
        return _refused(
            request, 409, f"Job {job['name']} is running already", str(exc), busy[0] if busy else None
        )
    ctx.relay.kick()
    run_id = json.loads(bytes(answer.body))["run_id"]  # type: ignore[arg-type]
    raise web.HTTPSeeOther(f"/runs/{run_id}")


@routes.post("/jobs/{job_id}/cancel")
@needs(Permission.JOBS_RUN)
@page
async def cancel_job(request: web.Request) -> web.Response:
    job = await job_of(request)
    runs = await in_session(request, lambda s: jobstore.cancel_job_runs(s, job["id"]), write=True)
    await publish_cancels(request, runs)
    raise web.HTTPSeeOther(_back(await request.post()))


@routes.post(r"/jobs/{job_id}/{switch:enable|disable}")
@needs(Permission.JOBS_WRITE)
@page
async def switch_job(request: web.Request) -> web.Response:
    """Enable or disable a job's schedule (one click: the other button undoes it)."""
    ctx = request.app[CTX]
    ref, on = request.match_info["job_id"], request.match_info["switch"] == "enable"
    await in_session(request, lambda s: job_pages.set_enabled(s, ref, on, ctx.clock()), write=True)
    await jobs_changed(request)
    raise web.HTTPSeeOther(_back(await request.post()))


@routes.post("/jobs/{job_id}/delete")
@needs(Permission.JOBS_WRITE)
@page
async def delete_job(request: web.Request) -> web.Response:
    form = await request.post()
    job = await job_of(request)
    if form.get("confirm_name") != job["name"]:
        message = f"Type the job's name, {job['name']}, exactly to delete it. Nothing was deleted."
        return _refused(request, 422, f"Job {job['name']} was not deleted", message)
    force = form.get("force") == "on"
    try:
        gone = await in_session(request, lambda s: jobstore.delete_job(s, job["id"], force=force), write=True)
    except Conflict as exc:
        busy = await in_session(request, lambda s: [r.id for r in jobstore.unfinished_runs(s, job["id"])])
        return _refused(
            request, 409, f"Job {job['name']} was not deleted", str(exc), busy[0] if busy else None
        )
    await publish_cancels(request, gone)
    await jobs_changed(request)
    raise web.HTTPSeeOther(_back(form))
