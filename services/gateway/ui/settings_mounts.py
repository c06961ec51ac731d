"""Settings: NFS/CIFS mounts (/settings/mounts): the shares vbm mounts under its data directory,
each with its state (mounted, unmounted, stale), the mount command line vbm runs (no secret) and
its Test, Mount, Unmount, "Use as repository" and Remove actions; the add form. The same catalog
and manager as /api/v1/mounts (services/gateway/api_mounts.py); an action's result is shown
beside its share. "Use as repository" adds a repository location at a folder on the mounted share
(opened first, like any location) and leads to the repositories page."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import page, render
from services.gateway.ui.settings_common import removed
from shared.catalog import locations as locstore
from shared.catalog import mounts as mountstore
from shared.errors import Conflict, Invalid, StoreError
from shared.model.access import Permission
from shared.mounts import connect, manager
from shared.mounts.model import Share, mount_point
from shared.repo.locations import try_open

routes = web.RouteTableDef()

FIELDS = ("name", "kind", "server", "export", "share", "version", "options", "username", "domain")
LABELS = {"name": "Name", "kind": "Kind", "server": "Server", "export": "NFS export", "share": "CIFS share",
          "version": "Protocol version", "options": "More mount options", "username": "CIFS user name",
          "domain": "CIFS domain", "password": "CIFS password", "location": "Location name"}  # fmt: skip
BADGE = {"mounted": "ok", "unmounted": "cancelled", "stale": "failed"}


async def _page(
    request: web.Request, status: int = 200, values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None, refused: dict[str, str] | None = None,
    results: dict[str, dict[str, Any]] | None = None,
) -> web.Response:  # fmt: skip
    settings = request.app[CTX].settings
    views = await in_session(request, lambda s: mountstore.list_views(s, settings))
    return render(
        request, "settings/mounts.html", status, mounts=views, values=values or {"kind": "nfs"},
        errors=errors or {}, refused=refused or {}, results=results or {}, labels=LABELS, badge=BADGE,
    )  # fmt: skip


@routes.get("/settings/mounts")
@needs(Permission.REPOSITORIES_READ)
@page
async def mounts_page(request: web.Request) -> web.Response:
    return await _page(request)


def _error(exc: StoreError) -> dict[str, str]:
    if isinstance(exc, Invalid):
        field = exc.field if exc.field in LABELS else "name"
        return {field: f"{LABELS[field]}: {exc.message}"}
    return {"name": str(exc)}


@routes.post("/settings/mounts")
@needs(Permission.SETTINGS_WRITE)
@page
async def add_mount(request: web.Request) -> web.Response:
    """Store a share and mount it (as POST /api/v1/mounts); the mount's outcome beside it."""
    ctx = request.app[CTX]
    values, body = _form_values(await request.post())

    def save(s: Session) -> Share:
        share = mountstore.candidate_new(s, body)
        mountstore.save(s, ctx.settings, share, ctx.clock())
        return share

    try:
        share = await in_session(request, save, write=True)
    except (Invalid, Conflict) as exc:
        return await _page(request, 422, values, _error(exc))
    outcome = await manager.mount(share, ctx.settings)
    return await _page(request, results={share.name: {"action": "Mount", **outcome.view()}})


async def _stored(request: web.Request) -> Share:
    settings, name = request.app[CTX].settings, request.match_info["name"]
    return await in_session(request, lambda s: mountstore.decrypted(mountstore.stored(s, name), settings))


def _form_values(form: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """(what was typed, to show again; the body of what was filled in, the password too)."""
    values = {k: str(form.get(k, "")).strip() for k in FIELDS}
    body: dict[str, Any] = {k: v for k, v in values.items() if v}
    if form.get("password"):
        body["password"] = str(form.get("password"))
    return values, body


async def _edit(
    request: web.Request, values: dict[str, Any], errors: dict[str, str], status: int
) -> web.Response:
    settings, name = request.app[CTX].settings, request.match_info["name"]
    view = await in_session(request, lambda s: mountstore.get_view(s, settings, name))
    values = values or {k: view.get(k) or "" for k in FIELDS}
    return render(
        request, "settings/mount_edit.html", status, mount=view, values=values, errors=errors, labels=LABELS
    )


@routes.get("/settings/mounts/{name}/edit")
@needs(Permission.SETTINGS_WRITE)
@page
async def edit_form(request: web.Request) -> web.Response:
    return await _edit(request, {}, {}, 200)


@routes.post("/settings/mounts/{name}/edit")
@needs(Permission.SETTINGS_WRITE)
@page
async def change_mount(request: web.Request) -> web.Response:
    """Change a share (as PUT /api/v1/mounts/{name}): a blank password keeps the stored one."""
    ctx, name = request.app[CTX], request.match_info["name"]
    await in_session(request, lambda s: mountstore.stored(s, name))  # 404 before the form
    values, body = _form_values(await request.post())
    body = {k: v for k, v in body.items() if k not in ("name", "kind")} | {
        k: "" for k in ("export", "share", "options", "username", "domain") if not values[k]
    }

    def save(s: Session) -> None:
        mountstore.save(
            s, ctx.settings, mountstore.candidate_change(s, ctx.settings, name, body), ctx.clock()
        )

    try:
        await in_session(request, save, write=True)
    except (Invalid, Conflict) as exc:
        return await _edit(request, values | {"name": name}, _error(exc), 422)
    raise web.HTTPSeeOther(f"/settings/mounts#mount-{name}")


@routes.post("/settings/mounts/{name}/test")
@needs(Permission.SETTINGS_WRITE)
@page
async def test_mount(request: web.Request) -> web.Response:
    tested = await connect.test(await _stored(request), request.app[CTX].settings.mounts.connect_timeout)
    said = tested.message if tested.ok else f"{tested.step}: {tested.message}"
    return await _page(
        request, results={request.match_info["name"]: {"action": "Test", "ok": tested.ok, "message": said}}
    )


@routes.post("/settings/mounts/{name}/mount")
@needs(Permission.SETTINGS_WRITE)
@page
async def mount_share(request: web.Request) -> web.Response:
    outcome = await manager.mount(await _stored(request), request.app[CTX].settings)
    return await _page(request, results={request.match_info["name"]: {"action": "Mount", **outcome.view()}})


@routes.post("/settings/mounts/{name}/unmount")
@needs(Permission.SETTINGS_WRITE)
@page
async def unmount_share(request: web.Request) -> web.Response:
    share = await _stored(request)
    outcome = await manager.unmount(share.name, request.app[CTX].settings)
    return await _page(request, results={share.name: {"action": "Unmount", **outcome.view()}})


@routes.post("/settings/mounts/{name}/use")
@needs(Permission.SETTINGS_WRITE)
@page
async def use_as_repository(request: web.Request) -> web.Response:
    """Add a local-path repository location at `<mount point>/<location name>` (opened first: the
    guard refuses it while the share is not mounted)."""
    ctx, form = request.app[CTX], await request.post()
    share = await _stored(request)
    name = str(form.get("location", "")).strip()
    url = str(mount_point(ctx.settings.data_dir, share.name) / name) if name else ""

    def candidate(s: Session) -> locstore.Location:
        return locstore.candidate_new(s, ctx.settings, {"name": name, "url": url})

    try:
        loc = await in_session(request, candidate)
        failed = await try_open(loc.url, loc.credentials())
        if failed is not None:
            raise Conflict(f"{loc.url} cannot be used: {failed}")

        def save(s: Session) -> None:
            candidate(s)
            locstore.save(s, ctx.settings, loc, ctx.clock())

        await in_session(request, save, write=True)
    except StoreError as exc:
        message = exc.message if isinstance(exc, Invalid) else str(exc)
        result = {"action": "Use as repository", "ok": False, "message": f"{LABELS['location']}: {message}"}
        return await _page(request, 422, results={share.name: result})
    raise web.HTTPSeeOther(f"/settings/repositories#loc-{loc.name}")


@routes.post("/settings/mounts/{name}/delete")
@needs(Permission.SETTINGS_WRITE)
@page
async def delete_mount(request: web.Request) -> web.Response:
    """Unmount and remove a share (as DELETE /api/v1/mounts/{name}); refused while repositories
    are on it."""
    ctx, name = request.app[CTX], request.match_info["name"]

    def remove(s: Session) -> None:
        mountstore.remove(s, ctx.settings, name)

    try:
        await in_session(request, remove)  # refused early while a repository is on it (rolled back)
    except Conflict as exc:
        return await _page(request, 409, refused={name: f"{exc}. Nothing was removed."})
    form = await request.post()
    if form.get("confirm_name") == name:
        outcome = await manager.unmount(name, ctx.settings)
        if not outcome.ok:
            return await _page(request, 409, refused={name: f"{outcome.message}. Nothing was removed."})
    refused = await removed(request, "mount", remove, _page)
    if refused is not None:
        return refused
    raise web.HTTPSeeOther("/settings/mounts")
