"""The Backups pages, like Proxmox Backup Server's datastore content: restore points by VM and by
job (filters and the cursor in the query string), and a restore point's page with its sizes,
verification, copies, immutability, disks (download) and manifest (SHA-256 per file), where
Verify (its result arrives by polling a small fragment every 2 s until the verifier has written
it: the verify result is not a live event) and Pin/Unpin act.

Everything goes through the functions behind /api/v1/backups: `runstore.list_backups` and the
`Window`, `backups.catalogued`, `manifest_json.build`, `runstore.verify_request` under
`answer_once` (an Idempotency-Key from the page makes a double click one request) and
`runstore.set_pinned`."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.api_runs import BACKUP_FILTERS
from services.gateway.common import CTX, credentials_for, in_session
from services.gateway.idempotency import answer_once
from services.gateway.ui.render import page, render
from shared.catalog import backups, manifest_json
from shared.catalog import jobs as jobstore
from shared.catalog import runs as runstore
from shared.catalog.idempotency import Answer
from shared.catalog.listing import Window
from shared.db.models import Replication, RestorePointRow
from shared.errors import Invalid
from shared.model.access import Permission
from shared.repo import RepoError
from shared.repo.locations import opened

routes = web.RouteTableDef()

VERIFY_STATES = ("pending", "ok", "failed")


def copies_of(session: Session, ids: list[str]) -> dict[str, dict[str, int]]:
    """Per restore point: its copies to secondary repositories, in all and done."""
    out: dict[str, dict[str, int]] = {}
    if not ids:
        return out
    found = session.execute(
        select(Replication.restore_point_id, Replication.state, func.count())
        .where(Replication.restore_point_id.in_(ids))
        .group_by(Replication.restore_point_id, Replication.state)
    )
    for rp_id, state, n in found:
        entry = out.setdefault(rp_id, {"total": 0, "done": 0})
        entry["total"] += n
        if state == "done":
            entry["done"] += n
    return out


def by_vm(session: Session) -> list[dict[str, Any]]:
    """Per VM with restore points (PBS's backup groups): how many, and the newest's time."""
    found = session.execute(
        select(
            RestorePointRow.vcenter,
            RestorePointRow.vm_moref,
            func.max(RestorePointRow.vm_name),
            func.count(),
            func.max(RestorePointRow.finished_at),
        )
        .group_by(RestorePointRow.vcenter, RestorePointRow.vm_moref)
        .order_by(func.max(RestorePointRow.vm_name), RestorePointRow.vcenter)
    )
    return [
        {"vcenter": vc, "moref": moref, "name": name, "count": n, "newest": newest}
        for vc, moref, name, n, newest in found
    ]


@routes.get("/backups")
@needs(Permission.BACKUPS_READ)
@page
async def backups_list(request: web.Request) -> web.Response:
    """Restore points, newest first, by `vm`, `job`, `vcenter`, `verify`; paged by cursor."""
    q = request.query
    window = Window.parse(q, BACKUP_FILTERS)
    if q.get("verify") and q["verify"] not in VERIFY_STATES:
        raise Invalid("verify", f"{q['verify']!r} is not one of {', '.join(VERIFY_STATES)}", where="query")

    def work(s: Session) -> dict[str, Any]:
        found = runstore.list_backups(
            s, window, vm=q.get("vm"), job=q.get("job"), vcenter=q.get("vcenter"), verify=q.get("verify")
        )
        points = [runstore.backup_view(r) for r in found.rows]
        jobs = jobstore.list_jobs(s)
        vcenters = sorted(set(s.scalars(select(RestorePointRow.vcenter).distinct())))
        return {
            "points": points,
            "total": found.total,
            "next_cursor": found.next_cursor,
            "copies": copies_of(s, [p["id"] for p in points]),
            "job_names": {j.id: j.name for j in jobs},
            "vcenter_names": vcenters,
            "groups": [] if any(q.get(name) for name in BACKUP_FILTERS) else by_vm(s),
        }

    found = await in_session(request, work)
    filters = {name: q.get(name, "") for name in BACKUP_FILTERS}
    filtered = any(filters.values())
    return render(
        request,
        "backups/list.html",
        **found,
        filters=filters,
        limit=window.limit,
        paged=bool(q.get("cursor") or q.get("offset")),
        first_query=urlencode({k: v for k, v in filters.items() if v}),
        next_query=urlencode(
            {**{k: v for k, v in filters.items() if v}, "cursor": found["next_cursor"] or ""}
        ),
        show_vm=True,
        verify_states=VERIFY_STATES,
        empty="No restore point matches these filters: change them or clear them."
        if filtered
        else "No restore points yet: run a job (Jobs, Run now) to make the first.",
    )


def _verify_key() -> str:
    return f"ui-verify-{secrets.token_hex(8)}"


def verifying(view: dict[str, Any]) -> bool:
    """Whether a verify was asked for and has not landed yet."""
    asked, done = view.get("verify_requested_at"), view.get("verified_at")
    if not asked:
        return False
    return not done or datetime.fromisoformat(done) < datetime.fromisoformat(asked)


@routes.get("/backups/{rp_id}")
@needs(Permission.BACKUPS_READ)
@page
async def backup_page(request: web.Request) -> web.Response:
    """A restore point: the catalog's view, its copies, its manifest.json (SHA-256 per file)."""
    rp_id = request.match_info["rp_id"]
    view = await in_session(request, lambda s: backups.catalogued(s, rp_id))
    row = await in_session(request, lambda s: manifest_json.catalogued(s, rp_id))
    job_name = None
    if view["job_id"]:
        job_name = await in_session(
            request, lambda s: next((j.name for j in jobstore.list_jobs(s) if j.id == view["job_id"]), None)
        )
    manifest: dict[str, Any] | None = None
    manifest_error: str | None = None
    try:
        async with opened(view["repository"], credentials_for(request)(view["repository"])) as repo:
            manifest = await manifest_json.build(repo, row)
    except (RepoError, OSError) as exc:
        manifest_error = f"repository {view['repository']}: {exc}"
    stored, logical = view["bytes_stored"], view["logical_bytes"]
    return render(
        request,
        "backups/detail.html",
        p=view,
        job_name=job_name,
        manifest=manifest,
        manifest_error=manifest_error,
        ratio=round(logical / stored, 2) if stored and logical else None,
        verifying=verifying(view),
        verify_key=_verify_key(),
    )


@routes.get("/backups/{rp_id}/verification")
@needs(Permission.BACKUPS_READ)
@page
async def verification(request: web.Request) -> web.Response:
    """The verify panel alone (htmx polls it every 2 s while a verify is under way)."""
    rp_id = request.match_info["rp_id"]
    view = await in_session(request, lambda s: runstore.backup_view(runstore.get_backup(s, rp_id)))
    return render(request, "backups/verify.html", p=view, verifying=verifying(view), verify_key=_verify_key())


@routes.post("/backups/{rp_id}/verify")
@needs(Permission.BACKUPS_VERIFY)
@page
async def verify(request: web.Request) -> web.StreamResponse:
    """Verify now: the same request as POST /api/v1/backups/{id}/verify (with the page's
    Idempotency-Key, a double click asks once); htmx gets the polling panel, a form the page."""
    ctx = request.app[CTX]
    rp_id = request.match_info["rp_id"]

    def start(session: Session) -> Answer:
        return Answer(202, runstore.verify_request(session, rp_id, ctx.clock()), f"/api/v1/backups/{rp_id}")

    await answer_once(request, start)
    ctx.relay.kick()
    if request.headers.get("HX-Request"):
        return await verification(request)
    raise web.HTTPSeeOther(f"/backups/{rp_id}")


@routes.post("/backups/{rp_id}/pin")
@needs(Permission.BACKUPS_PIN)
@page
async def pin(request: web.Request) -> web.Response:
    """Pin (retention keeps it) or unpin (`pinned=false`) a restore point, then its page."""
    rp_id = request.match_info["rp_id"]
    form = await request.post()
    wanted = str(form.get("pinned", "true"))
    if wanted not in ("true", "false"):
        raise Invalid("pinned", f"{wanted!r} is neither true nor false", where="body")
    await in_session(request, lambda s: runstore.set_pinned(s, rp_id, wanted == "true"), write=True)
    raise web.HTTPSeeOther(f"/backups/{rp_id}")
