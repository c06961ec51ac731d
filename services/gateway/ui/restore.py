"""The restore wizard (after Veeam's entire-VM restore): one URL per step, the answers carried
in the query string so that Back keeps them, each new step's heading focused. VM (search) ->
restore point (verify state, size; one that failed verification is refused with the reason) ->
kind (new VM, in place, instant recovery, restore test, download a disk) -> where (host or
cluster, datastore with its free space, network, name, power on; typed name for in place) ->
summary -> Start, the same request as POST /api/v1/restores (`restores.request_restore` under
`answer_once`, the form's Idempotency-Key making a double submit one restore) -> the restore's
page, live over the event stream (static/ui/restore.js), with Cancel, and for an instant VM
Migrate and Stop.

Placement choices come from the VM's vCenter (`restore_wizard.choices`); when it cannot be
asked, the fields are free text and the mover checks them before it writes anything."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import identity_of, needs
from services.gateway.common import CTX, in_session
from services.gateway.idempotency import answer_once
from services.gateway.ui.render import page, render
from shared.catalog import restore_wizard as wizard
from shared.catalog import restores
from shared.catalog.idempotency import Answer
from shared.catalog.vcenters import effective
from shared.errors import Conflict, Invalid, NotFound
from shared.model.access import Permission

routes = web.RouteTableDef()
FINAL = restores.FINAL


def _answers(source: Any) -> dict[str, str]:
    return {k: str(source[k]) for k in wizard.FIELDS if isinstance(source.get(k), str) and source.get(k)}


def _query(answers: dict[str, str], **more: str) -> str:
    return urlencode({**answers, **more})


@routes.get("/restore")
@needs(Permission.RESTORES_RUN)
@page
async def choose_vm(request: web.Request) -> web.Response:
    search = request.query.get("q", "")[:200]
    found = await in_session(request, lambda s: wizard.vms(s, search or None))
    return render(request, "restore/vms.html", vms=found, q=search)


@routes.get("/restore/{vcenter}/{moref}/points")
@needs(Permission.RESTORES_RUN)
@page
async def choose_point(request: web.Request) -> web.Response:
    vc, moref = request.match_info["vcenter"], request.match_info["moref"]
    if not (vc + moref).isprintable() or len(vc) > 64 or len(moref) > 64:
        raise NotFound("no such VM")
    found = await in_session(request, lambda s: wizard.points(s, vc, moref))
    return render(request, "restore/points.html", points=found, vm=found[0], refused=wizard.refused)


async def _point(request: web.Request) -> dict[str, Any]:
    rp_id = request.match_info["rp_id"]
    return await in_session(request, lambda s: wizard.point(s, rp_id))


async def _step(request: web.Request) -> tuple[dict[str, Any], dict[str, str]]:
    """The restore point of a step and the answers so far (Invalid, a 422 page, for an odd kind)."""
    view = await _point(request)
    answers = _answers(request.query)
    if answers.get("mode", "new_vm") not in wizard.MODES:
        raise Invalid("mode", f"{answers['mode']!r} is not a kind of restore", where="query")
    return view, answers


def _refuse(request: web.Request, view: dict[str, Any]) -> web.Response | None:
    why = wizard.refused(view)
    if why is None:
        return None
    return render(request, "restore/refused.html", 409, p=view, message=why)


@routes.get("/restore/point/{rp_id}/kind")
@needs(Permission.RESTORES_RUN)
@page
async def choose_kind(request: web.Request) -> web.Response:
    view, answers = await _step(request)
    return _refuse(request, view) or render(
        request, "restore/kind.html", p=view, a=answers, modes=wizard.MODES
    )


async def _vcenters(request: web.Request) -> list[str]:
    """The vCenters a VM may be restored to: configured and stored (added in Settings)."""
    settings = await in_session(request, lambda s: effective(s, request.app[CTX].settings))
    return sorted(v.name for v in settings.vcenters)


async def _choices(request: web.Request, vcenter: str) -> tuple[dict[str, Any] | None, str | None]:
    settings = await in_session(request, lambda s: effective(s, request.app[CTX].settings))
    try:
        return await asyncio.to_thread(wizard.choices, settings, vcenter), None
    except Exception as exc:  # vCenter unreachable or refusing: the fields are free text then
        return None, f"vCenter {vcenter} could not be asked for its datastores and networks ({exc})"


async def _where_values(
    request: web.Request, view: dict[str, Any], answers: dict[str, str], errors: dict[str, str]
) -> dict[str, Any]:
    """What the where step (and its placement fields alone) shows: the target vCenter (a new VM
    may go to another configured or stored one; the other kinds stay on the VM's own) and the
    placement choices of the chosen vCenter's datacenter."""
    mode = answers.get("mode", "new_vm")
    vcenters = await _vcenters(request) if mode == "new_vm" else [view["vcenter"]]
    vcenter = answers.get("vcenter") or view["vcenter"] if mode == "new_vm" else view["vcenter"]
    if vcenter not in vcenters:
        errors = {"vcenter": f"{vcenter!r} is not a configured vCenter: choose one of the list", **errors}
        vcenter = view["vcenter"]
    choices, unreachable = (None, None)
    if mode not in ("in_place", "download"):
        choices, unreachable = await _choices(request, vcenter)
    dcs = sorted(choices or {})
    dc = answers.get("datacenter", "")
    if dcs and dc not in dcs:  # none asked yet, or one of the vCenter chosen before
        dc = dcs[0]
    return {
        "p": view, "a": answers, "mode": mode, "modes": wizard.MODES, "errors": errors,
        "datacenters": dcs, "place": (choices or {}).get(dc), "datacenter": dc,
        "unreachable": unreachable, "back": _query(answers), "vcenters": vcenters, "vcenter": vcenter,
        "formats": wizard.DISK_FORMATS,
    }  # fmt: skip


async def _where(request: web.Request, view: dict[str, Any], answers: dict[str, str], errors: dict[str, str],
                 status: int = 200) -> web.Response:  # fmt: skip
    values = await _where_values(request, view, answers, errors)
    return render(request, "restore/where.html", status, **values)


@routes.get("/restore/point/{rp_id}/where")
@needs(Permission.RESTORES_RUN)
@page
async def choose_where(request: web.Request) -> web.Response:
    view, answers = await _step(request)
    return _refuse(request, view) or await _where(request, view, answers, {})


@routes.get("/restore/point/{rp_id}/place")
@needs(Permission.RESTORES_RUN)
@page
async def place_fields(request: web.Request) -> web.Response:
    """The placement fields alone, of the vCenter and datacenter the form names now: what the
    where step's htmx puts in place when the target vCenter or the datacenter changes."""
    view, answers = await _step(request)
    values = await _where_values(request, view, answers, {})
    return _refuse(request, view) or render(request, "restore/_place.html", **values)


async def _checked(
    request: web.Request, view: dict[str, Any], answers: dict[str, str]
) -> tuple[Any, dict[str, str]]:
    body, errors = wizard.request_of(view["id"], answers)
    if body is None:
        return None, errors
    if body.vcenter and body.vcenter not in await _vcenters(request):
        return body, {"vcenter": f"{body.vcenter!r} is not a configured vCenter: choose one of the list"}
    where = None
    if body.mode not in ("in_place",):
        choices, _ = await _choices(request, body.vcenter or view["vcenter"])
        if choices:
            where = choices.get(body.datacenter or sorted(choices)[0])
    return body, wizard.problems_of(body, view, answers, where)


@routes.get("/restore/point/{rp_id}/summary")
@needs(Permission.RESTORES_RUN)
@page
async def summary(request: web.Request) -> web.Response:
    view, answers = await _step(request)
    if answers.get("mode") == "download":
        raise Invalid("mode", "a disk is downloaded from the step before, not started", where="query")
    if refused := _refuse(request, view):
        return refused
    body, errors = await _checked(request, view, answers)
    if errors:
        return await _where(request, view, answers, errors, 422)
    return render(
        request, "restore/summary.html", p=view, a=answers, body=body.model_dump(), modes=wizard.MODES,
        back=_query(answers), key=f"ui-restore-{secrets.token_hex(8)}", formats=wizard.DISK_FORMATS,
    )  # fmt: skip


@routes.post("/restore/point/{rp_id}/start")
@needs(Permission.RESTORES_RUN)
@page
async def start(request: web.Request) -> web.Response:
    """Start: the request of POST /api/v1/restores, once per the form's Idempotency-Key."""
    ctx = request.app[CTX]
    view = await _point(request)
    form = await request.post()
    answers = _answers(form)
    if refused := _refuse(request, view):
        return refused
    body, errors = wizard.request_of(view["id"], answers)
    if body is not None and body.mode == "in_place":
        errors = wizard.problems_of(body, view, answers, None)
    if body is None or errors:
        return await _where(request, view, answers, errors, 422)
    key = str(form.get("idempotency_key") or "") or None
    who = identity_of(request)

    def work(session: Session) -> Answer:
        settings = effective(session, ctx.settings)
        row = restores.request_restore(session, body, settings, ctx.clock(), by=who.actor if who else None)
        out = restores.restore_view(row)
        return Answer(202, out, f"/api/v1/restores/{out['id']}")

    try:
        answer = await answer_once(request, work, key=key, body=body.model_dump_json().encode())
    except Invalid as exc:
        return await _where(request, view, answers, {exc.field: exc.message}, 422)
    except Conflict as exc:
        return render(request, "restore/refused.html", 409, p=view, message=str(exc))
    ctx.relay.kick()
    restore_id = json.loads(bytes(answer.body))["id"]  # type: ignore[arg-type]
    raise web.HTTPSeeOther(f"/restores/{restore_id}")


async def _restore(request: web.Request) -> dict[str, Any]:
    restore_id = request.match_info["restore_id"]
    if len(restore_id) > 64 or not restore_id.isprintable():
        raise NotFound(f"no restore {restore_id[:40]!r}")
    return await in_session(request, lambda s: restores.restore_view(restores.get_restore(s, restore_id)))


@routes.get("/restores/{restore_id}")
@needs(Permission.RESTORES_READ)
@page
async def restore_page(request: web.Request) -> web.Response:
    return render(request, "restore/detail.html", r=await _restore(request), final=FINAL)


@routes.get("/restores/{restore_id}/panel")
@needs(Permission.RESTORES_READ)
@page
async def restore_panel(request: web.Request) -> web.Response:
    return render(request, "restore/_panel.html", r=await _restore(request), final=FINAL)


@routes.post(r"/restores/{restore_id}/{action:cancel|migrate|stop}")
@needs(Permission.RESTORES_RUN)
@page
async def act(request: web.Request) -> web.Response:
    """Cancel, or for an instant VM migrate (to a datastore) or stop: the API's functions."""
    ctx = request.app[CTX]
    r = await _restore(request)
    action = request.match_info["action"]
    form = await request.post()
    datastore = str(form.get("datastore") or "") or None

    def work(s: Session) -> object:
        if action == "cancel":
            return restores.cancel_restore(s, r["id"])
        return restores.instant_action(s, r["id"], action, datastore, ctx.clock())

    await in_session(request, work, write=True)
    ctx.relay.kick()
    raise web.HTTPSeeOther(f"/restores/{r['id']}")
