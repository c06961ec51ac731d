"""/api/v1/vcenters: the vCenters vbm backs up from, configured ones (read only here) and those
added through the API; their connection tested before they are saved (`?skip_test=true` to save
without). Passwords are write-only: answers say `"password": "set"`."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.answers.settings import Deleted, VCenterAnswer, VCenterList, VCenterSaved, VCenterTested
from services.gateway.api_vms import VCENTERS
from services.gateway.apidoc import boolean, op
from services.gateway.common import CTX, field_error, flag, in_session, json_response, problem, read_json
from shared.catalog import vcenters as vcstore
from shared.catalog.vcenters import VCenterChange
from shared.model.access import Permission
from shared.settings import VCenterSettings
from shared.vsphere.probe import Probe, probe

routes = web.RouteTableDef()

SKIP_TEST = boolean("skip_test", "save without testing the connection")


async def _test(vc: VCenterSettings) -> Probe:
    return await asyncio.to_thread(probe, vc)


async def _tested(request: web.Request, vc: VCenterSettings) -> Probe | None:
    """The connection test's result, None when the caller chose to skip it."""
    return None if flag(request, "skip_test") else await _test(vc)


def _failed(result: Probe) -> web.Response:
    """422 naming the field to change, with the test's result: nothing was saved."""
    detail = f"{result.field}: connection test failed ({result.kind}): {result.message}; nothing was saved"
    errors = [
        field_error(
            result.field or "url", "body", f"connection test failed ({result.kind}): {result.message}"
        )
    ]
    return problem(422, "Unprocessable Entity", detail, errors, extra={"test": result.view()})


def _answer(view: dict[str, object], tested: Probe | None) -> dict[str, object]:
    return vcstore.saved_view(view, None if tested is None else tested.view())


@routes.get("/api/v1/vcenters")
@needs(Permission.VCENTERS_READ)
@op(
    "The vCenters: configured (source env, read only here) and added (source api)",
    answer=VCenterList,
    cli="vbm vcenter list",
)
async def list_vcenters(request: web.Request) -> web.Response:
    settings = request.app[CTX].settings
    views = await in_session(request, lambda s: vcstore.list_views(s, settings))
    return json_response({"vcenters": views, "total": len(views)})


@routes.post("/api/v1/vcenters")
@needs(Permission.VCENTERS_WRITE)
@op(
    "Add a vCenter, its connection tested first (a failed test: 422 with `test`, nothing saved)",
    query=(SKIP_TEST,),
    body=VCenterSettings,
    answer=VCenterSaved,
    status=201,
    errors=(409, 503),
    cli="vbm vcenter add NAME --url URL --username USER",
)
async def add_vcenter(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await read_json(request)
    vc = await in_session(request, lambda s: vcstore.candidate_new(s, ctx.settings, body))
    tested = await _tested(request, vc)
    if tested is not None and not tested.ok:
        return _failed(tested)

    def save(s: Session) -> dict[str, object]:
        vcstore.candidate_new(s, ctx.settings, body)  # still free (another request may have won)
        return vcstore.row_view(vcstore.save(s, ctx.settings, vc, ctx.clock()))

    view = await in_session(request, save, write=True)
    request.app[VCENTERS].forget(vc.name)
    return json_response(_answer(view, tested), 201, {"Location": f"/api/v1/vcenters/{vc.name}"})


@routes.get("/api/v1/vcenters/{name}")
@needs(Permission.VCENTERS_READ)
@op("A vCenter (never its password)", answer=VCenterAnswer, cli="vbm vcenter show NAME")
async def get_vcenter(request: web.Request) -> web.Response:
    settings, name = request.app[CTX].settings, request.match_info["name"]
    return json_response(await in_session(request, lambda s: vcstore.get_view(s, settings, name)))


@routes.put("/api/v1/vcenters/{name}")
@needs(Permission.VCENTERS_WRITE)
@op(
    "Change an added vCenter (fields left out stay), tested first; 409 for a configured one",
    query=(SKIP_TEST,),
    body=VCenterChange,
    answer=VCenterSaved,
    errors=(409, 503),
    cli="vbm vcenter edit NAME",
)
async def change_vcenter(request: web.Request) -> web.Response:
    ctx, name = request.app[CTX], request.match_info["name"]
    body = await read_json(request)
    vc = await in_session(request, lambda s: vcstore.candidate_change(s, ctx.settings, name, body))
    tested = await _tested(request, vc)
    if tested is not None and not tested.ok:
        return _failed(tested)
    view = await in_session(
        request, lambda s: vcstore.row_view(vcstore.save(s, ctx.settings, vc, ctx.clock())), write=True
    )
    request.app[VCENTERS].forget(name)
    return json_response(_answer(view, tested))


@routes.delete("/api/v1/vcenters/{name}")
@needs(Permission.VCENTERS_WRITE)
@op(
    "Remove an added vCenter (409 while a job uses it, or for a configured one)",
    answer=Deleted,
    errors=(409,),
    cli="vbm vcenter rm NAME",
)
async def delete_vcenter(request: web.Request) -> web.Response:
    ctx, name = request.app[CTX], request.match_info["name"]
    await in_session(request, lambda s: vcstore.remove(s, ctx.settings, name), write=True)
    request.app[VCENTERS].forget(name)
    return json_response({"deleted": name})


@routes.post("/api/v1/vcenters/{name}/test")
@needs(Permission.VCENTERS_WRITE)
@op(
    "Test a vCenter's connection: 200 with ok, and the step that failed when it did",
    answer=VCenterTested,
    errors=(503,),
    cli="vbm vcenter test NAME",
)
async def test_vcenter(request: web.Request) -> web.Response:
    """Test a vCenter's connection as it is saved (or configured): 200 with `ok` and, when it
    failed, which step (`kind`: dns, tcp, tls, not_vcenter, credentials) and how to fix it."""
    ctx, name = request.app[CTX], request.match_info["name"]

    result = await _test(await in_session(request, lambda s: vcstore.find_usable(s, ctx.settings, name)))
    return json_response({"name": name, **result.view()})
