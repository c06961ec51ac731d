"""The dashboard: is everything protected? What runs now, what finished in the last 24 hours,
open alerts, repositories against the usage threshold, the next scheduled runs, the services,
and the snapshots vbm holds open (0 when idle: the no-leak promise).

The page reads the catalog only (shared/catalog/overview.py), so it answers fast; the protected
and unprotected VMs need vCenter's inventory and come as a fragment the page loads after it
(`/dashboard/vms`). Runs now are kept live by static/ui/dash.js over GET /api/v1/events."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.api_vms import VCENTERS
from services.gateway.common import CTX, PRESENCE, in_session
from services.gateway.ui.render import page, render
from shared.catalog import overview
from shared.catalog import vcenters as vcstore
from shared.errors import Invalid
from shared.model.access import Permission

routes = web.RouteTableDef()

INVENTORY_SECONDS = 15.0  # a vCenter that has not answered by then is named, not waited for


def _no_query(request: web.Request) -> None:
    if request.query:
        name = next(iter(request.query))
        raise Invalid(name, "unknown query parameter: this page takes none", where="query")


@routes.get("/dashboard")
@needs(Permission.STATUS_READ)
@page
async def dashboard(request: web.Request) -> web.Response:
    _no_query(request)
    ctx = request.app[CTX]
    now = ctx.clock()
    status = request.app[PRESENCE].answer(now)
    threshold = ctx.settings.verify.usage_alert_percent
    seen = await in_session(request, lambda s: overview.overview(s, now, threshold))
    return render(request, "dashboard.html", status=status, o=seen)


@routes.get("/dashboard/running")
@needs(Permission.RUNS_READ)
@page
async def running_fragment(request: web.Request) -> web.Response:
    """The runs now and the open-snapshot count (dash.js asks again when a run or task changes
    state, and at each connect)."""
    _no_query(request)
    runs, snapshots = await in_session(request, lambda s: (overview.running(s), overview.open_snapshots(s)))
    return render(request, "dashboard/running.html", running=runs, snapshots=snapshots)


@routes.get("/dashboard/alerts")
@needs(Permission.ALERTS_READ)
@page
async def alerts_fragment(request: web.Request) -> web.Response:
    _no_query(request)
    found = await in_session(request, overview.open_alerts)
    return render(request, "dashboard/alerts.html", alerts=found, back="/dashboard", oob=True)


@routes.get("/dashboard/vms")
@needs(Permission.VMS_READ)
@page
async def vms_fragment(request: web.Request) -> web.Response:
    """Protected and unprotected VMs: every vCenter's inventory now (through the gateway's
    vCenter sessions, as GET /api/v1/vms), each enabled job's selection resolved as a run would."""
    _no_query(request)
    settings = request.app[CTX].settings
    known, broken = await in_session(request, lambda s: vcstore.usable(s, settings))
    names = [vc.name for vc in known]
    wanted_tags = await in_session(request, lambda s: _wants_tags(s, names))
    found = await asyncio.gather(*(_inventory(request, n, n in wanted_tags) for n in names))
    inventories: dict[str, Any] = {n: inv for n, (inv, _) in zip(names, found, strict=True)}
    why = {n: err for n, (_, err) in zip(names, found, strict=True) if err}
    why.update({n: str(exc) for n, exc in broken.items()})
    inventories.update(dict.fromkeys(broken))
    seen = await in_session(request, lambda s: overview.protection(s, inventories))
    return render(request, "dashboard/vms.html", p=seen, why=why, vcenters=len(inventories))


def _wants_tags(session: Session, vcenters: list[str]) -> set[str]:
    from sqlalchemy import select

    from shared.db.models import Job
    from shared.vsphere import selection

    jobs = [selection.of_job(j) for j in session.scalars(select(Job).where(Job.enabled.is_(True)))]
    return {name for name in vcenters if any(j.wants_tags(name) for j in jobs)}


async def _inventory(request: web.Request, name: str, tags: bool) -> tuple[Any, str | None]:
    """One vCenter's inventory (with tags when a job selects by tag), or None and why not."""
    from shared.vsphere.inventory import read_inventory
    from shared.vsphere.selection import with_tags_of

    pool = request.app[VCENTERS]
    try:
        async with asyncio.timeout(INVENTORY_SECONDS):
            inventory = await pool.call(name, read_inventory)
            if tags:
                inventory = await pool.call(name, with_tags_of(inventory))
    except TimeoutError:
        return None, f"no answer within {INVENTORY_SECONDS:g} s"
    except Exception as exc:  # any failure of one vCenter is shown, the rest listed
        return None, str(exc) or type(exc).__name__
    return inventory, None
