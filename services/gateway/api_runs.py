"""/api/v1/runs and /api/v1/backups: runs with their tasks, and the restore point catalog."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.common import in_session, json_response
from shared import runstore
from shared.repo import LocalBackend, RepoError, Repository

routes = web.RouteTableDef()


def _paging(page: runstore.Page, total: int) -> dict[str, int]:
    return {"total": total, "limit": page.limit, "offset": page.offset}


@routes.get("/api/v1/runs")
async def list_runs(request: web.Request) -> web.Response:
    q = request.query
    page = runstore.Page.parse(q.get("limit"), q.get("offset"))

    def work(session: Session) -> tuple[int, list[dict[str, Any]]]:
        total, rows = runstore.list_runs(session, page, job_id=q.get("job_id"), state=q.get("state"))
        return total, [runstore.run_view(r) for r in rows]

    total, runs = await in_session(request, work)
    return json_response({"runs": runs, **_paging(page, total)})


@routes.get("/api/v1/runs/{run_id}")
async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    return json_response(await in_session(request, lambda s: runstore.run_detail(s, run_id)))


@routes.get("/api/v1/backups")
async def list_backups(request: web.Request) -> web.Response:
    q = request.query
    page = runstore.Page.parse(q.get("limit"), q.get("offset"))

    def work(session: Session) -> tuple[int, list[dict[str, Any]]]:
        total, rows = runstore.list_backups(session, page, vm=q.get("vm"), job=q.get("job"))
        return total, [runstore.backup_view(r) for r in rows]

    total, rows = await in_session(request, work)
    return json_response({"backups": rows, **_paging(page, total)})


@routes.get("/api/v1/backups/{rp_id}")
async def get_backup(request: web.Request) -> web.Response:
    rp_id = request.match_info["rp_id"]
    view = await in_session(request, lambda s: runstore.backup_view(runstore.get_backup(s, rp_id)))
    manifest: dict[str, Any] | None = None
    error: str | None = None
    try:
        repo = await Repository.open(LocalBackend(view["repository"]))
        manifest = (await repo.load(rp_id)).model_dump(mode="json")
    except (RepoError, OSError) as exc:
        error = str(exc)
    return json_response({**view, "manifest": manifest, "manifest_error": error})
