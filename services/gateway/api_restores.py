"""/api/v1/restores and /api/v1/reports: restores (new VM, in place, test), their progress and
cancel; the signed reports of restore tests and the key that verifies them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.common import CTX, in_session, json_response, read_json
from services.gateway.idempotency import answer_once
from shared.catalog import reports, restores
from shared.catalog.idempotency import Answer
from shared.catalog.listing import Window
from shared.catalog.vcenters import effective
from shared.clock import iso
from shared.db.models import RestoreReport
from shared.errors import Invalid, NotFound
from shared.model.access import Permission

routes = web.RouteTableDef()


@routes.post("/api/v1/restores")
@needs(Permission.RESTORES_RUN)
async def create_restore(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = restores.RestoreRequest.model_validate(await read_json(request))

    def start(session: Session) -> Answer:
        view = restores.restore_view(
            restores.request_restore(session, body, effective(session, ctx.settings), ctx.clock())
        )
        return Answer(202, view, f"/api/v1/restores/{view['id']}")

    answer = await answer_once(request, start)  # an Idempotency-Key: a retry starts nothing twice
    ctx.relay.kick()
    return answer


@routes.get("/api/v1/restores")
@needs(Permission.RESTORES_READ)
async def list_restores(request: web.Request) -> web.Response:
    """Restores, newest first (`order=asc`), by `state`, `mode`, `vcenter`, `restore_point`,
    `since`/`until`; paged by `limit` and `offset` or `cursor`."""
    q = request.query
    window = Window.parse(q, ("state", "mode", "vcenter", "restore_point"))

    def work(session: Session) -> dict[str, Any]:
        found = restores.list_restores(
            session, window, state=q.get("state"), mode=q.get("mode"), vcenter=q.get("vcenter"),
            restore_point=q.get("restore_point"),
        )  # fmt: skip
        return found.answer("restores", [restores.restore_view(r) for r in found.rows], window)

    return json_response(await in_session(request, work))


@routes.get("/api/v1/restores/{restore_id}")
@needs(Permission.RESTORES_READ)
async def get_restore(request: web.Request) -> web.Response:
    restore_id = request.match_info["restore_id"]
    return json_response(
        await in_session(request, lambda s: restores.restore_view(restores.get_restore(s, restore_id)))
    )


@routes.post("/api/v1/restores/{restore_id}/cancel")
@needs(Permission.RESTORES_RUN)
async def cancel_restore(request: web.Request) -> web.Response:
    """Stop a restore: the mover notices within a second and removes what it made."""
    restore_id = request.match_info["restore_id"]
    view = await in_session(
        request, lambda s: restores.restore_view(restores.cancel_restore(s, restore_id)), write=True
    )
    return json_response(view, 202)


@routes.get("/api/v1/reports")
@needs(Permission.REPORTS_READ)
async def list_reports(request: web.Request) -> web.Response:
    """Restore-test reports, newest first (`?vm=` filters by VM name)."""
    vm = request.query.get("vm")

    def work(session: Session) -> list[dict[str, object]]:
        query = select(RestoreReport).order_by(RestoreReport.created_at.desc())
        if vm:
            query = query.where(RestoreReport.vm_name == vm)
        return [
            {"id": r.id, "restore_point_id": r.restore_point_id, "vm_name": r.vm_name, "ok": r.ok,
             "created_at": iso(r.created_at)}
            for r in session.scalars(query.limit(500))
        ]  # fmt: skip

    return json_response({"reports": await in_session(request, work)})


@routes.get("/api/v1/reports/public-key")
@needs(Permission.REPORTS_READ)
async def report_key(request: web.Request) -> web.Response:
    """The public key that verifies every report (PEM) and its key id."""
    key = await asyncio.to_thread(reports.signing_key, request.app[CTX].settings.data_dir)
    return json_response({"key_id": reports.key_id(key), "public_key_pem": reports.public_pem(key)})


@routes.get("/api/v1/reports/{report_id}")
@needs(Permission.REPORTS_READ)
async def get_report(request: web.Request) -> web.Response:
    """A signed report as stored: {"report", "signature", "key_id"}; give it to an auditor."""
    report_id = request.match_info["report_id"]

    def work(session: Session) -> str:
        row = session.get(RestoreReport, report_id)
        if row is None:
            raise NotFound(f"no report {report_id!r}")
        return row.signed

    return web.Response(text=await in_session(request, work), content_type="application/json")


@routes.post("/api/v1/restores/{restore_id}/migrate")
@needs(Permission.RESTORES_RUN)
async def migrate_instant(request: web.Request) -> web.Response:
    """Move an instantly recovered VM to a production datastore (Storage vMotion), then unmount."""
    ctx = request.app[CTX]
    restore_id = request.match_info["restore_id"]
    body = await read_json(request)
    datastore = body.get("datastore") if isinstance(body, dict) else None
    if not isinstance(datastore, str) or not datastore:
        raise Invalid("datastore", "the datastore to move the VM to is required")
    view = await in_session(
        request,
        lambda s: restores.restore_view(
            restores.instant_action(s, restore_id, "migrate", datastore, ctx.clock())
        ),
        write=True,
    )
    ctx.relay.kick()
    return json_response(view, 202)


@routes.post("/api/v1/restores/{restore_id}/stop")
@needs(Permission.RESTORES_RUN)
async def stop_instant(request: web.Request) -> web.Response:
    """Stop an instantly recovered VM: power off, remove it, unmount the published restore point."""
    ctx = request.app[CTX]
    restore_id = request.match_info["restore_id"]
    view = await in_session(
        request,
        lambda s: restores.restore_view(restores.instant_action(s, restore_id, "stop", None, ctx.clock())),
        write=True,
    )
    ctx.relay.kick()
    return json_response(view, 202)
