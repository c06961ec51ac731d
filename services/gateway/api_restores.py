"""/api/v1/restores and /api/v1/reports: restores (new VM, in place, test), their progress and
cancel; the signed reports of restore tests and the key that verifies them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import identity_of, needs
from services.gateway.answers.restores import (
    MigrateRequest,
    PublicKey,
    Reports,
    Restore,
    Restores,
    SignedReport,
)
from services.gateway.apidoc import IDEMPOTENCY_KEY, WINDOW, op, text
from services.gateway.common import CTX, in_session, json_response, read_json
from services.gateway.idempotency import answer_once
from shared.catalog import reports, restores
from shared.catalog.idempotency import Answer
from shared.catalog.listing import Window
from shared.catalog.vcenters import effective
from shared.errors import Invalid
from shared.model.access import Permission

routes = web.RouteTableDef()


@routes.post("/api/v1/restores")
@needs(Permission.RESTORES_RUN)
@op(
    "Restore a restore point: as a new VM, in place, as a test, or instantly",
    description="Checked and queued (202, Location names it); the mover carries it out. 409 when"
    " the restore point failed verification (unless allow_unverified) or another restore is making"
    " the same VM. With an Idempotency-Key, a retry answers the first answer and starts nothing twice.",
    query=(IDEMPOTENCY_KEY,),
    body=restores.RestoreRequest,
    answer=Restore,
    status=202,
    errors=(409,),
    cli="vbm restore start RESTORE_POINT --idempotency-key KEY --json",
)
async def create_restore(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = restores.RestoreRequest.model_validate(await read_json(request))
    who = identity_of(request)

    def start(session: Session) -> Answer:
        settings = effective(session, ctx.settings)
        row = restores.request_restore(session, body, settings, ctx.clock(), by=who.actor if who else None)
        view = restores.restore_view(row)
        return Answer(202, view, f"/api/v1/restores/{view['id']}")

    answer = await answer_once(request, start)  # an Idempotency-Key: a retry starts nothing twice
    ctx.relay.kick()
    return answer


@routes.get("/api/v1/restores")
@needs(Permission.RESTORES_READ)
@op(
    "Restores, newest first (paged)",
    query=(
        *WINDOW,
        text("state", "only restores in this state (queued, running, succeeded, failed, cancelled)"),
        text("mode", "only restores of this mode (new_vm, in_place, test, instant)"),
        text("vcenter", "only restores to this vCenter"),
        text("restore_point", "only restores of this restore point (its id)"),
        text("vm", "only restores of a VM whose name (as backed up) holds this, in any case"),
    ),
    answer=Restores,
    cli="vbm restore list --json",
)
async def list_restores(request: web.Request) -> web.Response:
    """Restores, newest first (`order=asc`), by `state`, `mode`, `vcenter`, `restore_point`, `vm`,
    `since`/`until`; paged by `limit` and `offset` or `cursor`."""
    q = request.query
    window = Window.parse(q, ("state", "mode", "vcenter", "restore_point", "vm"))

    def work(session: Session) -> dict[str, Any]:
        found = restores.list_restores(
            session, window, state=q.get("state"), mode=q.get("mode"), vcenter=q.get("vcenter"),
            restore_point=q.get("restore_point"), vm=q.get("vm"),
        )  # fmt: skip
        return found.answer("restores", [restores.restore_view(r) for r in found.rows], window)

    return json_response(await in_session(request, work))


@routes.get("/api/v1/restores/{restore_id}")
@needs(Permission.RESTORES_READ)
@op("A restore and its progress", answer=Restore, cli="vbm restore show RESTORE_ID --json")
async def get_restore(request: web.Request) -> web.Response:
    restore_id = request.match_info["restore_id"]
    return json_response(
        await in_session(request, lambda s: restores.restore_view(restores.get_restore(s, restore_id)))
    )


@routes.post("/api/v1/restores/{restore_id}/cancel")
@needs(Permission.RESTORES_RUN)
@op(
    "Stop a restore",
    description="Stop a restore: the mover notices within a second and removes what it made. 409"
    " when it has ended already.",
    answer=Restore,
    status=202,
    errors=(409,),
    cli="vbm restore cancel RESTORE_ID --json",
)
async def cancel_restore(request: web.Request) -> web.Response:
    """Stop a restore: the mover notices within a second and removes what it made."""
    restore_id = request.match_info["restore_id"]
    view = await in_session(
        request, lambda s: restores.restore_view(restores.cancel_restore(s, restore_id)), write=True
    )
    return json_response(view, 202)


@routes.get("/api/v1/reports")
@needs(Permission.REPORTS_READ)
@op(
    "Restore-test reports, newest first (at most 500)",
    query=(text("vm", "only the reports of this VM (by name)"),),
    answer=Reports,
    cli="vbm report list --vm VM --json",
)
async def list_reports(request: web.Request) -> web.Response:
    """Restore-test reports, newest first (`?vm=` filters by VM name)."""
    vm = request.query.get("vm")

    def work(session: Session) -> list[dict[str, object]]:
        return [reports.report_view(r) for r in reports.list_reports(session, vm)]

    return json_response({"reports": await in_session(request, work)})


@routes.get("/api/v1/reports/public-key")
@needs(Permission.REPORTS_READ)
@op("The public key that verifies every report", answer=PublicKey, cli="vbm report public-key --json")
async def report_key(request: web.Request) -> web.Response:
    """The public key that verifies every report (PEM) and its key id."""
    key = await asyncio.to_thread(reports.signing_key, request.app[CTX].settings.data_dir)
    return json_response(reports.public_key_view(key))


@routes.get("/api/v1/reports/{report_id}")
@needs(Permission.REPORTS_READ)
@op(
    "A signed report, as stored (give it to an auditor)",
    answer=SignedReport,
    cli="vbm report show REPORT_ID --json",
)
async def get_report(request: web.Request) -> web.Response:
    """A signed report as stored: {"report", "signature", "key_id"}; give it to an auditor."""
    report_id = request.match_info["report_id"]

    def work(session: Session) -> str:
        return reports.signed_report(session, report_id)

    return web.Response(text=await in_session(request, work), content_type="application/json")


@routes.post("/api/v1/restores/{restore_id}/migrate")
@needs(Permission.RESTORES_RUN)
@op(
    "Move an instantly recovered VM to a production datastore",
    description="Storage vMotion, then the restore point is unmounted. 409 unless the restore is a"
    " running instant VM.",
    body=MigrateRequest,
    answer=Restore,
    status=202,
    errors=(409,),
    cli="vbm restore migrate RESTORE_ID --datastore DATASTORE --json",
)
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
@op(
    "Stop an instantly recovered VM",
    description="Power it off, remove it, unmount the published restore point. 409 unless the"
    " restore is a running instant VM.",
    answer=Restore,
    status=202,
    errors=(409,),
    cli="vbm restore stop RESTORE_ID --json",
)
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
