"""/api/v1/vms: the VMs of every vCenter, configured or added through the API (or one,
`?vcenter=NAME`), asked live through the gateway's long-lived vCenter sessions (`VCENTERS`,
closed when the app stops)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from services.gateway.access import needs
from services.gateway.common import CTX, in_session, json_response
from shared.catalog import jobs as jobstore
from shared.catalog import vcenters as vcstore
from shared.clock import iso
from shared.errors import Unreachable
from shared.model.access import Permission
from shared.runtime.bus import Permanent
from shared.settings import VCenterSettings
from shared.vsphere import VMInfo, VSphereError
from shared.vsphere.pool import VCenters

routes = web.RouteTableDef()
VCENTERS = web.AppKey("vcenters", VCenters)


async def vcenter_sessions(app: web.Application) -> AsyncIterator[None]:
    """The app's vCenter sessions: opened at the first request to each, closed at shutdown."""
    ctx = app[CTX]
    app[VCENTERS] = VCenters(ctx.settings, threads=4, load=vcstore.loader(ctx.settings, ctx.sessions))
    yield
    await asyncio.to_thread(app[VCENTERS].close)


async def _list(pool: VCenters, vc: VCenterSettings) -> list[VMInfo]:
    """Every VM of one vCenter; Unreachable when vCenter cannot be asked."""
    try:
        return await asyncio.to_thread(pool.get(vc.name).list_vms)  # the session is got here, not in threads
    except (VSphereError, Permanent) as exc:
        raise Unreachable(f"vCenter {vc.name} ({vc.url}) cannot be asked: {exc}") from None


def vm_view(vcenter: str, vm: VMInfo) -> dict[str, Any]:
    return {
        "vcenter": vcenter,
        "name": vm.name,
        "moref": vm.moref,
        "uuid": vm.uuid,
        "power_state": vm.power_state,
        "cbt": vm.cbt_enabled,
        "disks": [{"key": d.key, "label": d.label, "capacity": d.capacity} for d in vm.disks],
        "snapshots": [{"name": s.name, "moref": s.moref, "created": iso(s.created)} for s in vm.snapshots],
    }


@routes.get("/api/v1/vms")
@needs(Permission.VMS_READ)
async def list_vms(request: web.Request) -> web.Response:
    """Every VM of every vCenter; one that cannot be asked is named under `unreachable` (with
    why) while the others' VMs are listed. Asked for by name (`?vcenter=`), it is a 502."""
    settings = request.app[CTX].settings
    name = request.query.get("vcenter")
    known, broken = await in_session(request, lambda s: vcstore.usable(s, settings))
    if name in broken:
        raise broken[name]
    vcenters = [jobstore.vcenter_of(settings.model_copy(update={"vcenters": known}), name)] if name else known
    pool = request.app[VCENTERS]
    found = await asyncio.gather(*(_list(pool, vc) for vc in vcenters), return_exceptions=True)
    vms: list[dict[str, Any]] = []
    unreachable = [{"vcenter": n, "url": None, "error": str(e)} for n, e in broken.items() if not name]
    for vc, listed in zip(vcenters, found, strict=True):
        if isinstance(listed, Unreachable):
            if name:
                raise listed
            unreachable.append({"vcenter": vc.name, "url": vc.url, "error": str(listed)})
        elif isinstance(listed, BaseException):
            raise listed
        else:
            vms.extend(vm_view(vc.name, vm) for vm in listed)
    vms.sort(key=lambda v: (v["vcenter"], v["name"]))
    return json_response(
        {
            "vms": vms,
            "total": len(vms),
            "vcenters": [vc.name for vc in vcenters]
            + [u["vcenter"] for u in unreachable if u["url"] is None],
            "unreachable": unreachable,
        }
    )
