"""/api/v1/restores: restore a restore point as a new VM, follow it, cancel it."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.common import CTX, in_session, json_response, read_json
from shared import restores
from shared.runstore import Page

routes = web.RouteTableDef()


@routes.post("/api/v1/restores")
async def create_restore(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = restores.RestoreRequest.model_validate(await read_json(request))

    def start(session: Session) -> dict[str, object]:
        return restores.restore_view(restores.request_restore(session, body, ctx.settings, ctx.clock()))

    view = await in_session(request, start, write=True)
    ctx.relay.kick()
    return json_response(view, 202, headers={"Location": f"/api/v1/restores/{view['id']}"})


@routes.get("/api/v1/restores")
async def list_restores(request: web.Request) -> web.Response:
    page = Page.parse(request.query.get("limit"), request.query.get("offset"))

    def work(session: Session) -> tuple[int, list[dict[str, object]]]:
        total, rows = restores.list_restores(session, page.limit, page.offset)
        return total, [restores.restore_view(r) for r in rows]

    total, rows = await in_session(request, work)
    return json_response({"restores": rows, "total": total, "limit": page.limit, "offset": page.offset})


@routes.get("/api/v1/restores/{restore_id}")
async def get_restore(request: web.Request) -> web.Response:
    restore_id = request.match_info["restore_id"]
    return json_response(
        await in_session(request, lambda s: restores.restore_view(restores.get_restore(s, restore_id)))
    )


@routes.post("/api/v1/restores/{restore_id}/cancel")
async def cancel_restore(request: web.Request) -> web.Response:
    """Stop a restore: the mover notices within a second and removes what it made."""
    restore_id = request.match_info["restore_id"]
    view = await in_session(
        request, lambda s: restores.restore_view(restores.cancel_restore(s, restore_id)), write=True
    )
    return json_response(view, 202)
