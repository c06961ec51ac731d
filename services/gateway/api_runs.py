"""/api/v1/runs and /api/v1/backups: runs with their tasks, and the restore point catalog."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.answers import runs as answers
from services.gateway.apidoc import IDEMPOTENCY_KEY, WINDOW, choice, number, op, text
from services.gateway.common import CTX, MAX_ROW_ID, credentials_for, in_session, json_response, query_int
from services.gateway.idempotency import answer_once
from services.gateway.ranges import byte_range, content_disposition
from shared.catalog import backups, replication
from shared.catalog import runs as runstore
from shared.catalog.idempotency import Answer
from shared.catalog.listing import Window
from shared.model.access import Permission
from shared.repo import ChunkError, ManifestError, RepoError, read_disk
from shared.repo.locations import opened

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

RUN_FILTERS = ("job", "job_id", "state", "trigger")
BACKUP_FILTERS = ("vm", "job", "vcenter", "verify")
REPLICATION_FILTERS = ("state", "restore_point")


@routes.get("/api/v1/runs")
@needs(Permission.RUNS_READ)
@op(
    "Runs, newest first",
    query=(
        *WINDOW,
        text("job", "job id or name"),
        text("job_id", "job id or name (the same as job)"),
        text("state", "queued, running, succeeded, warning, failed, cancelled"),
        text("trigger", "schedule, manual, api, ..."),
    ),
    answer=answers.RunPage,
    cli="vbm run list --json",
)
async def list_runs(request: web.Request) -> web.Response:
    """Runs, newest first (`order=asc`), by `job` (id or name; `job_id` too), `state`, `trigger`,
    `since`/`until`; paged by `limit` and `offset` or `cursor`."""
    q = request.query
    window = Window.parse(q, RUN_FILTERS)

    def work(session: Session) -> dict[str, Any]:
        found = runstore.list_runs(
            session,
            window,
            job=q.get("job") or q.get("job_id"),
            state=q.get("state"),
            trigger=q.get("trigger"),
        )
        return found.answer("runs", [runstore.run_view(r) for r in found.rows], window)

    return json_response(await in_session(request, work))


@routes.get("/api/v1/runs/{run_id}")
@needs(Permission.RUNS_READ)
@op("A run with its tasks (progress, ETA)", answer=answers.RunDetail, cli="vbm run show RUN_ID --json")
async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    return json_response(await in_session(request, lambda s: runstore.run_detail(s, run_id)))


@routes.get("/api/v1/runs/{run_id}/log")
@needs(Permission.RUNS_READ)
@op(
    "What happened to a run, in words",
    query=(number("after", "only the lines after this line id", 0, MAX_ROW_ID),),
    answer=answers.RunLog,
    cli="vbm run log RUN_ID --json",
)
async def run_log(request: web.Request) -> web.Response:
    """What happened to the run, in words, oldest first; `?after=<id>` for the lines after one."""
    run_id = request.match_info["run_id"]
    after = query_int(request, "after", 0, 0, MAX_ROW_ID)

    return json_response(await in_session(request, lambda s: runstore.log_view(s, run_id, after)))


@routes.get("/api/v1/backups")
@needs(Permission.BACKUPS_READ)
@op(
    "Restore points, newest first",
    query=(
        *WINDOW,
        text("vm", "VM name or moref"),
        text("job", "job id or name"),
        text("vcenter", "the vCenter's name"),
        text("verify", "verification state: pending, ok, failed, ..."),
    ),
    answer=answers.BackupPage,
    cli="vbm backups ls --json",
)
async def list_backups(request: web.Request) -> web.Response:
    """Restore points, newest first (`order=asc`), by `vm`, `job`, `vcenter`, `verify` (state),
    `since`/`until` (finish time); paged by `limit` and `offset` or `cursor`."""
    q = request.query
    window = Window.parse(q, BACKUP_FILTERS)

    def work(session: Session) -> dict[str, Any]:
        found = runstore.list_backups(
            session,
            window,
            vm=q.get("vm"),
            job=q.get("job"),
            vcenter=q.get("vcenter"),
            verify=q.get("verify"),
        )
        return found.answer("backups", [runstore.backup_view(r) for r in found.rows], window)

    return json_response(await in_session(request, work))


@routes.get("/api/v1/replications")
@needs(Permission.BACKUPS_READ)
@op(
    "Copies to secondary repositories (replication), newest first",
    query=(
        *WINDOW,
        choice("state", "only the copies in this state", replication.STATES),
        text("restore_point", "only the copies of this restore point"),
    ),
    answer=answers.ReplicationPage,
    cli="vbm backups copies --json",
)
async def list_replications(request: web.Request) -> web.Response:
    """Copies to secondary repositories by creation time, newest first (`order=asc`);
    `?state=pending|running|done|failed`, `?restore_point=<id>`, `since`/`until`; paged by
    `limit` and `offset` or `cursor`."""
    q = request.query
    window = Window.parse(q, REPLICATION_FILTERS)

    def work(session: Session) -> dict[str, Any]:
        found = replication.listing(
            session, window, state=q.get("state"), restore_point=q.get("restore_point")
        )
        return found.answer("replications", [replication.view(r) for r in found.rows], window)

    return json_response(await in_session(request, work))


@routes.get("/api/v1/backups/{rp_id}")
@needs(Permission.BACKUPS_READ)
@op(
    "A restore point, its copies and its manifest",
    answer=answers.BackupDetail,
    cli="vbm backups show RESTORE_POINT_ID --json",
)
async def get_backup(request: web.Request) -> web.Response:
    """The catalog's view, the copies to secondary repositories, and the manifest as the
    repository holds it (null, with `manifest_error` saying why, when it cannot be read)."""
    view = await in_session(request, lambda s: backups.catalogued(s, request.match_info["rp_id"]))
    return json_response(await backups.with_manifest(view, credentials_for(request)))


@routes.post("/api/v1/backups/{rp_id}/verify")
@needs(Permission.BACKUPS_VERIFY)
@op(
    "Verify a restore point now",
    query=(IDEMPOTENCY_KEY,),
    answer=answers.VerifyQueued,
    status=202,
    cli="vbm verify RESTORE_POINT_ID --json",
)
async def verify_backup(request: web.Request) -> web.Response:
    """Verify a restore point now (every chunk read); the result lands on the restore point."""
    ctx = request.app[CTX]
    rp_id = request.match_info["rp_id"]

    def start(session: Session) -> Answer:
        return Answer(202, runstore.verify_request(session, rp_id, ctx.clock()), f"/api/v1/backups/{rp_id}")

    answer = await answer_once(request, start)  # an Idempotency-Key: a retry starts nothing twice
    ctx.relay.kick()
    return answer


@routes.get("/api/v1/backups/{rp_id}/disks/{disk}")
@needs(Permission.RESTORES_RUN)
@op(
    "A disk of a restore point as a raw image",
    description="200 with the whole disk, or 206 with the one `Range: bytes=a-b` (also `a-`, `-n`) asked"
    " for, with `Content-Range`; 416 when the range is outside the disk or not one range of bytes."
    " HEAD answers the size. A damaged chunk ends the transfer early (a short body).",
    media="application/octet-stream",
    errors=(416, 503),
    cli="vbm backups download RESTORE_POINT_ID --disk DISK --json",
)
async def download_disk(request: web.Request) -> web.StreamResponse:
    """A disk of a restore point as a raw image, streamed and verified chunk by chunk.

    `{disk}` is the disk's key (e.g. 2000) or its index (0, 1, ...). Supports one `Range:
    bytes=a-b` (also `a-` and `-n`) with 206; HEAD answers the size. Every chunk is checked as
    it is read: a damaged chunk ends the transfer early (the client sees a short body).
    """
    rp_id = request.match_info["rp_id"]
    try:
        ref = int(request.match_info["disk"])
    except ValueError:
        raise web.HTTPNotFound(
            text=f"disk {request.match_info['disk']!r} is not a disk key or index"
        ) from None
    row = await in_session(request, lambda s: runstore.backup_view(runstore.get_backup(s, rp_id)))
    async with contextlib.AsyncExitStack() as stack:  # the repository closes when the response ends
        try:
            repo = await stack.enter_async_context(
                opened(row["repository"], credentials_for(request)(row["repository"]))
            )
            rp = await repo.load(rp_id)
            disk = rp.disk(ref)
        except ManifestError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        except (RepoError, OSError) as exc:
            raise web.HTTPServiceUnavailable(text=f"repository {row['repository']}: {exc}") from None
        size = disk.capacity
        span = byte_range(request.headers.get("Range"), size)
        offset, length = span if span is not None else (0, size)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Length": str(length),
            "Content-Disposition": content_disposition(f"{rp.vm_name}-{rp_id}-disk{disk.key}.img"),
        }
        if span is not None:
            headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
        resp = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
        await resp.prepare(request)
        if request.method == "HEAD" or length == 0:
            return resp
        try:
            async for piece in read_disk(repo, rp, disk, offset, length):
                await resp.write(piece)
        except ChunkError as exc:
            # The status and length are sent already: cut the connection, so the client sees a short
            # body (an error) rather than waiting, and never takes what it got for the whole disk.
            log.error("download of %s disk %d stopped: %s", rp_id, disk.key, exc)
            resp.force_close()
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write_eof()
        return resp


@routes.post("/api/v1/backups/{rp_id}/pin")
@needs(Permission.BACKUPS_PIN)
@op(
    "Pin a restore point: retention keeps it",
    answer=answers.BackupAnswer,
    cli="vbm backups pin RESTORE_POINT_ID --json",
)
async def pin_backup(request: web.Request) -> web.Response:
    """Pin a restore point: retention never removes it (until unpinned)."""
    return await _pin(request, True)


@routes.post("/api/v1/backups/{rp_id}/unpin")
@needs(Permission.BACKUPS_PIN)
@op(
    "Unpin a restore point: retention decides again",
    answer=answers.BackupAnswer,
    cli="vbm backups unpin RESTORE_POINT_ID --json",
)
async def unpin_backup(request: web.Request) -> web.Response:
    return await _pin(request, False)


async def _pin(request: web.Request, pinned: bool) -> web.Response:
    rp_id = request.match_info["rp_id"]

    return json_response(
        await in_session(request, lambda s: runstore.set_pinned(s, rp_id, pinned), write=True)
    )
