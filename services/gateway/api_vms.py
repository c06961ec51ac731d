"""/api/v1/vms: the VMs of every vCenter, configured or added through the API (or one,
`?vcenter=NAME`), asked live through the gateway's long-lived vCenter sessions (`VCENTERS`,
closed when the app stops)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway.access import needs
from services.gateway.answers.jobs import VMs
from services.gateway.apidoc import op, text
from services.gateway.common import CTX, in_session, json_response
from shared.catalog import jobs as jobstore
from shared.catalog import vcenters as vcstore
from shared.catalog import vms as vmstore
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


@routes.get("/api/v1/vms")
@needs(Permission.VMS_READ)
@op(
    "Every VM of every vCenter, asked now",
    query=(text("vcenter", "only this vCenter (by name): 502 when it cannot be asked"),),
    answer=VMs,
    errors=(502,),
    cli="vbm vm ls --vcenter NAME --json",
)
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
    asked: list[tuple[VCenterSettings, list[VMInfo] | Unreachable]] = []
    for vc, listed in zip(vcenters, found, strict=True):
        if isinstance(listed, Unreachable):
            if name:
                raise listed
            asked.append((vc, listed))
        elif isinstance(listed, BaseException):
            raise listed
        else:
            asked.append((vc, listed))
    return json_response(vmstore.listing(asked, {} if name else broken))
