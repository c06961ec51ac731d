"""/api/v1/mounts: NFS and CIFS shares vbm mounts under `<data_dir>/mounts/<name>` (shared/mounts/,
stored by shared/catalog/mounts.py with the CIFS password encrypted; write-only). Adding a share
mounts it (`?skip_mount=true` to only store it); `POST .../mount`, `.../unmount` and `.../test`
(a connection test with user-space clients, nothing mounted) say what happened, `ok` false with
the reason when it failed. The gateway mounts every stored share on start (`remount`). Removing
a share is refused while a repository location or job is on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.answers.mounts import (
    MountAnswer,
    MountBody,
    MountDone,
    MountList,
    MountSaved,
    MountTested,
)
from services.gateway.answers.settings import Deleted
from services.gateway.apidoc import boolean, op
from services.gateway.common import CTX, flag, in_session, json_response, read_json
from shared.catalog import mounts as mountstore
from shared.errors import Conflict
from shared.model.access import Permission
from shared.mounts import connect, manager
from shared.mounts.model import Share
from shared.runtime.service import Context

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
SKIP_MOUNT = boolean("skip_mount", "store the share without mounting it")


async def _share(request: web.Request) -> Share:
    settings, name = request.app[CTX].settings, request.match_info["name"]
    return await in_session(request, lambda s: mountstore.decrypted(mountstore.stored(s, name), settings))


@routes.get("/api/v1/mounts")
@needs(Permission.REPOSITORIES_READ)
@op("The NFS/CIFS shares vbm mounts, with their state now", answer=MountList, cli="vbm mount list")
async def list_mounts(request: web.Request) -> web.Response:
    settings = request.app[CTX].settings
    views = await in_session(request, lambda s: mountstore.list_views(s, settings))
    return json_response({"mounts": views, "total": len(views)})


@routes.post("/api/v1/mounts")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Add a share (its CIFS password stored encrypted) and mount it; `mount` says how that went",
    query=(SKIP_MOUNT,),
    body=MountBody,
    answer=MountSaved,
    status=201,
    errors=(409, 503),
    cli="vbm mount add NAME --kind KIND --server HOST",
)
async def add_mount(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await read_json(request)

    def save(s: Session) -> Share:
        share = mountstore.candidate_new(s, body)
        mountstore.save(s, ctx.settings, share, ctx.clock())
        return share

    share = await in_session(request, save, write=True)
    outcome = None if flag(request, "skip_mount") else (await manager.mount(share, ctx.settings)).view()
    view = await in_session(request, lambda s: mountstore.get_view(s, ctx.settings, share.name))
    return json_response({**view, "mount": outcome}, 201, {"Location": f"/api/v1/mounts/{share.name}"})


@routes.get("/api/v1/mounts/{name}")
@needs(Permission.REPOSITORIES_READ)
@op("A share and its state now (never its password)", answer=MountAnswer, cli="vbm mount show NAME")
async def get_mount(request: web.Request) -> web.Response:
    settings, name = request.app[CTX].settings, request.match_info["name"]
    return json_response(await in_session(request, lambda s: mountstore.get_view(s, settings, name)))


@routes.put("/api/v1/mounts/{name}")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Change a share (fields left out stay, the password too); a mounted share takes the change"
    " at its next mount",
    body=MountBody,
    answer=MountAnswer,
    errors=(409, 503),
    cli="vbm mount edit NAME",
)
async def change_mount(request: web.Request) -> web.Response:
    ctx, name = request.app[CTX], request.match_info["name"]
    body = await read_json(request)

    def save(s: Session) -> dict[str, Any]:
        share = mountstore.candidate_change(s, ctx.settings, name, body)
        mountstore.save(s, ctx.settings, share, ctx.clock())
        return mountstore.get_view(s, ctx.settings, name)

    return json_response(await in_session(request, save, write=True))


@routes.delete("/api/v1/mounts/{name}")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Unmount and remove a share (409 while a repository location or job is on it)",
    answer=Deleted,
    errors=(409,),
    cli="vbm mount remove NAME",
)
async def delete_mount(request: web.Request) -> web.Response:
    ctx, name = request.app[CTX], request.match_info["name"]
    await in_session(request, lambda s: mountstore.remove(s, ctx.settings, name))  # refused early: 409
    outcome = await manager.unmount(name, ctx.settings)
    if not outcome.ok:
        raise Conflict(f"mount {name!r} cannot be removed while mounted: {outcome.message}")
    await in_session(request, lambda s: mountstore.remove(s, ctx.settings, name), write=True)
    return json_response({"deleted": name})


@routes.post("/api/v1/mounts/{name}/mount")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Mount a share (a stale mount is let go first), then check it is writable",
    answer=MountDone,
    errors=(503,),
    cli="vbm mount mount NAME",
)
async def mount_share(request: web.Request) -> web.Response:
    share = await _share(request)
    outcome = await manager.mount(share, request.app[CTX].settings)
    return json_response({"name": share.name, **outcome.view()})


@routes.post("/api/v1/mounts/{name}/unmount")
@needs(Permission.SETTINGS_WRITE)
@op("Unmount a share (lazily when stale)", answer=MountDone, cli="vbm mount unmount NAME")
async def unmount_share(request: web.Request) -> web.Response:
    ctx, name = request.app[CTX], request.match_info["name"]
    await in_session(request, lambda s: mountstore.stored(s, name))  # 404 for an unknown name
    outcome = await manager.unmount(name, ctx.settings)
    return json_response({"name": name, **outcome.view()})


@routes.post("/api/v1/mounts/{name}/test")
@needs(Permission.SETTINGS_WRITE)
@op(
    "Test a share's server without mounting: name, port, login, share or export, a probe file",
    answer=MountTested,
    errors=(503,),
    cli="vbm mount test NAME",
)
async def test_mount(request: web.Request) -> web.Response:
    share = await _share(request)
    tested = await connect.test(share, request.app[CTX].settings.mounts.connect_timeout)
    return json_response({"name": share.name, **tested.view()})


async def remount(app: web.Application) -> AsyncIterator[None]:
    """On start, mount every stored share that is not mounted (cleanup_ctx: in the background, so
    a dead server never delays the gateway; the guard refuses repositories there meanwhile)."""
    ctx = app[CTX]

    async def run() -> None:
        try:
            shares, broken = await asyncio.to_thread(_stored_shares, ctx)
            for name, why in broken.items():
                log.error("mount %s cannot be mounted on start: %s", name, why)
            for name, outcome in (await manager.remount_all(shares, ctx.settings)).items():
                (log.info if outcome.ok else log.error)("mount %s on start: %s", name, outcome.message)
        except Exception:  # a start must not fail for a share
            log.exception("mounting the stored shares on start failed")

    task = asyncio.create_task(run()) if ctx.settings.mounts.remount_on_start else None
    yield
    if task is not None:
        task.cancel()


def _stored_shares(ctx: Context) -> tuple[list[Share], dict[str, str]]:
    with ctx.sessions() as session:
        return mountstore.all_shares(session, ctx.settings)
