"""The VMs pages: every VM of every vCenter in one sortable, searchable, filterable table (with
its last backup and the jobs that protect it), and a VM's own page with its restore points.

The inventory is read through the gateway's vCenter sessions (the same pool as GET /api/v1/vms)
and kept for a few minutes per gateway process, so that searching and filtering do not ask
vCenter again; the page shows its age and a Refresh reads it anew. A vCenter that cannot be
asked is named in a banner while the others' VMs are listed. Which jobs hold a VM is each job's
selection resolved against that inventory, as a run resolves it (shared/catalog/protection.py)."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.api_vms import VCENTERS
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import page, render
from shared.catalog import jobs as jobstore
from shared.catalog import protection
from shared.catalog import runs as runstore
from shared.catalog import vcenters as vcstore
from shared.catalog.listing import Window
from shared.errors import Invalid, NotFound
from shared.model.access import Permission
from shared.runtime.bus import Permanent
from shared.vsphere import VSphereError
from shared.vsphere.inventory import InventoryVM, read_inventory
from shared.vsphere.pool import VCenters
from shared.vsphere.selection import with_tags_of

routes = web.RouteTableDef()

KEEP_S = 300.0  # how long an inventory read serves the pages before it is read again
FILTERS = ("q", "vcenter", "datastore", "protected", "state", "sort", "order")
PROTECTED = ("", "yes", "no")
STATES = ("", "succeeded", "warning", "failed", "cancelled", "never")
SORTS = {
    "name": lambda v: (v["name"].lower(), v["vcenter"]),
    "vcenter": lambda v: (v["vcenter"], v["name"].lower()),
    "power": lambda v: (v["power_state"], v["name"].lower()),
    "cpus": lambda v: (v["cpus"], v["name"].lower()),
    "memory": lambda v: (v["memory_mb"], v["name"].lower()),
    "disks": lambda v: (v["disk_bytes"], v["name"].lower()),
    "last": lambda v: ((v["last"] or {}).get("at") or "", v["name"].lower()),
    "jobs": lambda v: (len(v["jobs"]), v["name"].lower()),
}
COLUMNS = (
    ("name", "Name"),
    ("vcenter", "vCenter"),
    ("power", "Power"),
    ("cpus", "CPU"),
    ("memory", "RAM"),
    ("disks", "Disks"),
    (None, "Datastores"),
    ("last", "Last backup"),
    ("jobs", "Protected by"),
)


@dataclass
class Inventory:
    """What the vCenters answered at `read_at`: VMs per vCenter, or why one did not answer."""

    read_at: datetime
    monotonic: float
    vms: dict[str, list[InventoryVM]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)


_CACHE: weakref.WeakKeyDictionary[web.Application, Inventory] = weakref.WeakKeyDictionary()
_LOCKS: weakref.WeakKeyDictionary[web.Application, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _read_one(pool: VCenters, name: str, tags: bool) -> list[InventoryVM]:
    def run() -> list[InventoryVM]:
        client = pool.get(name)
        found = read_inventory(client)
        return with_tags_of(found)(client) if tags else found

    return await asyncio.to_thread(run)


async def inventory(request: web.Request, *, fresh: bool = False) -> Inventory:
    """The inventory of every usable vCenter, read now when `fresh` or older than KEEP_S."""
    app = request.app
    lock = _LOCKS.setdefault(app, asyncio.Lock())
    async with lock:
        kept = _CACHE.get(app)
        if kept is not None and not fresh and time.monotonic() - kept.monotonic < KEEP_S:
            return kept
        ctx = app[CTX]

        def known(s: Session) -> tuple[list[Any], dict[str, Any], dict[str, bool]]:
            usable, broken = vcstore.usable(s, ctx.settings)
            jobs = jobstore.list_jobs(s)
            return usable, broken, {vc.name: protection.wants_tags(jobs, vc.name) for vc in usable}

        usable, broken, tags = await in_session(request, known)
        pool = app[VCENTERS]
        found = await asyncio.gather(
            *(_read_one(pool, vc.name, tags[vc.name]) for vc in usable), return_exceptions=True
        )
        made = Inventory(read_at=ctx.clock(), monotonic=time.monotonic())
        for name, exc in broken.items():
            made.unreachable[name] = str(exc)
        for vc, listed in zip(usable, found, strict=True):
            if isinstance(listed, (VSphereError, Permanent, OSError)):
                made.unreachable[vc.name] = f"vCenter {vc.name} ({vc.url}) cannot be asked: {listed}"
            elif isinstance(listed, BaseException):
                raise listed
            else:
                made.vms[vc.name] = listed
        _CACHE[app] = made
        return made


def _rows(inv: Inventory, session: Session) -> list[dict[str, Any]]:
    """Every VM of the inventory (templates left out) with its last backup and its jobs."""
    jobs = jobstore.list_jobs(session)
    inventories: dict[str, list[InventoryVM] | None] = {name: None for name in inv.unreachable}
    inventories.update(inv.vms)
    held = protection.holders(jobs, inventories)
    last = protection.last_backups(session)
    rows = []
    for vcenter, vms in inv.vms.items():
        for vm in vms:
            if vm.template:
                continue
            holding = held.get((vcenter, vm.moref), [])
            rows.append(
                {
                    "vcenter": vcenter,
                    "moref": vm.moref,
                    "name": vm.name,
                    "power_state": vm.power_state,
                    "cpus": vm.cpus,
                    "memory_mb": vm.memory_mb,
                    "disk_bytes": sum(d.capacity for d in vm.disks),
                    "disks": len(vm.disks),
                    "datastores": list(vm.datastores),
                    "folder": vm.folder,
                    "host": vm.host,
                    "last": last.get((vcenter, vm.moref)),
                    "jobs": [{"id": j.id, "name": j.name, "enabled": j.enabled} for j in holding],
                    "protected": any(j.enabled for j in holding),
                }
            )
    return rows


@dataclass(frozen=True)
class Filters:
    q: str = ""
    vcenter: str = ""
    datastore: str = ""
    protected: str = ""
    state: str = ""
    sort: str = "name"
    order: str = "asc"

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        """The filters in the query string; Invalid names a parameter the page does not know or
        a value outside its choices (a bad link is a 400 page, never a 500 or a silent list)."""
        unknown = sorted(set(query) - set(FILTERS))
        if unknown:
            raise Invalid(unknown[0], f"unknown query parameter (known: {', '.join(FILTERS)})", where="query")
        got = {name: query.get(name, "").strip() for name in FILTERS}
        for name in ("q", "vcenter", "datastore"):
            if len(got[name]) > 255:
                raise Invalid(name, "is longer than 255 characters", where="query")
        _choice(got, "protected", PROTECTED)
        _choice(got, "state", STATES)
        got["sort"] = got["sort"] or "name"
        _choice(got, "sort", tuple(SORTS))
        got["order"] = got["order"] or "asc"
        _choice(got, "order", ("asc", "desc"))
        return cls(**got)

    def keep(self, **changed: str) -> str:
        """The query string of these filters with `changed` (empty values left out)."""
        values = {**self.__dict__, **changed}
        defaults = {"sort": "name", "order": "asc"}
        return urlencode({k: v for k, v in values.items() if v and defaults.get(k) != v})

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        q = self.q.lower()
        out = [
            r
            for r in rows
            if (not q or q in r["name"].lower() or q in r["moref"].lower())
            and (not self.vcenter or r["vcenter"] == self.vcenter)
            and (not self.datastore or self.datastore in r["datastores"])
            and (not self.protected or r["protected"] == (self.protected == "yes"))
            and (not self.state or ((r["last"] or {}).get("state") or "never") == self.state)
        ]
        out.sort(key=SORTS[self.sort], reverse=self.order == "desc")
        return out


def _choice(got: dict[str, str], name: str, allowed: tuple[str, ...]) -> None:
    if got[name] not in allowed:
        shown = ", ".join(a for a in allowed if a)
        raise Invalid(name, f"{got[name]!r} is not one of {shown}", where="query")


@routes.get("/vms")
@needs(Permission.VMS_READ)
@page
async def vms(request: web.Request) -> web.Response:
    """The VMs table; an htmx request for `vm-rows` gets only the table's body (active search)."""
    filters = Filters.parse(request.query)
    inv = await inventory(request)
    rows = await in_session(request, lambda s: _rows(inv, s))
    shown = filters.apply(rows)
    values: dict[str, Any] = {
        "rows": shown,
        "total": len(rows),
        "filters": filters,
        "columns": COLUMNS,
        "inventory": inv,
        "vcenters": sorted({*inv.vms, *inv.unreachable}),
        "datastores": sorted({d for r in rows for d in r["datastores"]}),
        "states": [s for s in STATES if s],
    }
    fragment = request.headers.get("HX-Target") == "vm-rows" and not request.headers.get(
        "HX-History-Restore-Request"
    )
    answer = render(request, "vms/fragment.html" if fragment else "vms/list.html", **values)
    answer.headers["Vary"] = "HX-Request, HX-Target"
    return answer


@routes.post("/vms/refresh")
@needs(Permission.VMS_READ)
@page
async def refresh(request: web.Request) -> web.Response:
    """Read every vCenter's inventory anew, then back to the VMs page with its filters."""
    form = await request.post()
    await inventory(request, fresh=True)
    kept = {k: v for k, v in parse_qsl(str(form.get("back", ""))) if k in FILTERS}
    raise web.HTTPSeeOther("/vms" + (f"?{urlencode(kept)}" if kept else ""))


@routes.get("/vms/{vcenter}/{moref}")
@needs(Permission.VMS_READ)
@page
async def vm_page(request: web.Request) -> web.Response:
    """A VM: what the inventory says, the jobs that protect it and its restore points."""
    vcenter, moref = request.match_info["vcenter"], request.match_info["moref"]
    inv = await inventory(request)
    window = Window.parse(request.query, ())

    def work(s: Session) -> tuple[dict[str, Any] | None, Any, list[dict[str, Any]]]:
        row = next((r for r in _rows(inv, s) if r["vcenter"] == vcenter and r["moref"] == moref), None)
        found = runstore.list_backups(s, window, vm=moref, vcenter=vcenter)
        return row, found, [runstore.backup_view(r) for r in found.rows]

    row, found, points = await in_session(request, work)
    if row is None and not points:
        known = vcenter in inv.vms
        raise NotFound(
            f"no VM {moref!r} in vCenter {vcenter!r}"
            + ("" if known else " (that vCenter was not read: it is unknown or could not be asked)")
            + " and no restore point of it"
        )
    name = row["name"] if row else points[0]["vm_name"]
    return render(
        request,
        "vms/vm.html",
        vm=row,
        name=name,
        vcenter=vcenter,
        moref=moref,
        points=points,
        total=found.total,
        next_cursor=found.next_cursor,
        unreachable=inv.unreachable.get(vcenter),
        read_at=inv.read_at,
    )
