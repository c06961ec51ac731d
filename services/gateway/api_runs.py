"""/api/v1/runs and /api/v1/backups: runs with their tasks, and the restore point catalog."""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.common import CTX, flag, in_session, json_response, query_int
from services.gateway.idempotency import answer_once
from shared.catalog import locations as locstore
from shared.catalog import prune, replication, runlog, usage
from shared.catalog import runs as runstore
from shared.catalog.idempotency import Answer
from shared.catalog.listing import Window
from shared.clock import iso
from shared.db.models import Replication, RestorePointRow
from shared.errors import Invalid
from shared.model.access import Permission
from shared.repo import ChunkError, ManifestError, RepoError, read_disk
from shared.repo.locations import Credentials, check_location, opened

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

RUN_FILTERS = ("job", "job_id", "state", "trigger")
BACKUP_FILTERS = ("vm", "job", "vcenter", "verify")


def _paging(page: runstore.Page, total: int) -> dict[str, int]:
    return {"total": total, "limit": page.limit, "offset": page.offset}


@routes.get("/api/v1/runs")
@needs(Permission.RUNS_READ)
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
async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    return json_response(await in_session(request, lambda s: runstore.run_detail(s, run_id)))


@routes.get("/api/v1/runs/{run_id}/log")
@needs(Permission.RUNS_READ)
async def run_log(request: web.Request) -> web.Response:
    """What happened to the run, in words, oldest first; `?after=<id>` for the lines after one."""
    run_id = request.match_info["run_id"]
    after = query_int(request, "after", 0, 0, 2**62)

    def work(session: Session) -> list[dict[str, Any]]:
        runstore.get_run(session, run_id)  # 404 for an unknown run
        return [{**line, "at": iso(line["at"])} for line in runlog.lines(session, run_id, after=after)]

    return json_response({"run_id": run_id, "lines": await in_session(request, work)})


@routes.get("/api/v1/backups")
@needs(Permission.BACKUPS_READ)
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
async def list_replications(request: web.Request) -> web.Response:
    """Copies to secondary repositories, newest first; `?state=pending|running|done|failed`,
    `?restore_point=<id>`."""
    q = request.query
    page = runstore.Page.parse(q.get("limit"), q.get("offset"))
    state = q.get("state")
    if state is not None and state not in replication.STATES:
        raise Invalid("state", f"{state!r} is not pending, running, done or failed")

    def work(session: Session) -> tuple[int, list[dict[str, Any]]]:
        return replication.listing(
            session, page.limit, page.offset, state=state, restore_point=q.get("restore_point")
        )

    total, rows = await in_session(request, work)
    return json_response({"replications": rows, **_paging(page, total)})


@routes.get("/api/v1/backups/{rp_id}")
@needs(Permission.BACKUPS_READ)
async def get_backup(request: web.Request) -> web.Response:
    rp_id = request.match_info["rp_id"]

    def work(session: Session) -> dict[str, Any]:
        view = runstore.backup_view(runstore.get_backup(session, rp_id))
        reps = session.scalars(select(Replication).where(Replication.restore_point_id == rp_id))
        return {**view, "replications": [replication.view(r) for r in reps]}

    view = await in_session(request, work)
    manifest: dict[str, Any] | None = None
    error: str | None = None
    try:
        async with opened(view["repository"], _credentials(request, view["repository"])) as repo:
            manifest = (await repo.load(rp_id)).model_dump(mode="json")
    except (RepoError, OSError) as exc:
        error = str(exc)
    return json_response({**view, "manifest": manifest, "manifest_error": error})


@routes.post("/api/v1/backups/{rp_id}/verify")
@needs(Permission.BACKUPS_VERIFY)
async def verify_backup(request: web.Request) -> web.Response:
    """Verify a restore point now (every chunk read); the result lands on the restore point."""
    ctx = request.app[CTX]
    rp_id = request.match_info["rp_id"]

    def start(session: Session) -> Answer:
        request_id = runstore.request_verify(session, rp_id, ctx.clock())
        body = {"request_id": request_id, "restore_point_id": rp_id, "status": "queued"}
        return Answer(202, body, f"/api/v1/backups/{rp_id}")

    answer = await answer_once(request, start)  # an Idempotency-Key: a retry starts nothing twice
    ctx.relay.kick()
    return answer


@routes.get("/api/v1/backups/{rp_id}/disks/{disk}")
@needs(Permission.RESTORES_RUN)
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
                opened(row["repository"], _credentials(request, row["repository"]))
            )
            rp = await repo.load(rp_id)
            disk = rp.disk(ref)
        except ManifestError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        except (RepoError, OSError) as exc:
            raise web.HTTPServiceUnavailable(text=f"repository {row['repository']}: {exc}") from None
        size = disk.capacity
        span = _range(request.headers.get("Range"), size)
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


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII `filename` for old clients, the exact name as RFC 5987 `filename*`."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\/;' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _unsatisfiable(size: int, detail: str) -> web.HTTPRequestRangeNotSatisfiable:
    return web.HTTPRequestRangeNotSatisfiable(text=detail, headers={"Content-Range": f"bytes */{size}"})


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """(offset, length) of a single `bytes=` range; None for no header; 416 when unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise _unsatisfiable(size, "only one range in bytes is supported")
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        raise _unsatisfiable(size, f"range {header!r} is malformed") from None
    end = min(end, size - 1)
    if start >= size or start > end or start < 0:
        raise _unsatisfiable(size, f"range {header!r} is outside the disk ({size} bytes)")
    return start, end - start + 1


@routes.get("/api/v1/prune")
@needs(Permission.PRUNE_READ)
async def prune_preview(request: web.Request) -> web.Response:
    """Every restore point (of `?job=`, `?vm=`, or all): keep or remove now, and the rule."""
    ctx = request.app[CTX]
    job, vm = request.query.get("job"), request.query.get("vm")

    def work(session: Session) -> list[dict[str, Any]]:
        return prune.with_expiry(session, ctx.settings, ctx.clock(), job_id=job, vm=vm)

    return json_response({"restore_points": await in_session(request, work)})


@routes.post("/api/v1/prune")
@needs(Permission.PRUNE_RUN)
async def prune_now(request: web.Request) -> web.Response:
    """Remove what the preview removes (manifests and catalog rows; `POST /api/v1/gc` after)."""
    ctx = request.app[CTX]
    job, vm = request.query.get("job"), request.query.get("vm")
    done = await prune.apply(ctx.sessions, ctx.settings, ctx.clock(), job_id=job, vm=vm)
    return json_response({"removed": [{"id": rp_id, "rule": reason} for rp_id, reason in done]})


@routes.post("/api/v1/gc")
@needs(Permission.PRUNE_RUN)
async def gc_now(request: web.Request) -> web.Response:
    """Garbage-collect `?repository=` (default: every repository in the catalog, and the
    secondaries copies went to); `?dry_run=true`."""
    ctx = request.app[CTX]
    dry = flag(request, "dry_run")
    wanted = request.query.get("repository")

    if wanted is not None:
        try:
            check_location(wanted)
        except ValueError as exc:
            raise Invalid("repository", str(exc)) from None
    locations = [wanted] if wanted else await in_session(request, prune.repositories)
    out = []
    for location in locations:
        try:
            r = await prune.collect_garbage(
                ctx.sessions, location, _credentials(request, location), ctx.clock(), dry_run=dry
            )
        except RepoError as exc:
            raise web.HTTPConflict(text=f"{location}: {exc}") from None
        out.append(
            {
                "repository": location,
                "restore_points": r.restore_points,
                "chunks_referenced": r.chunks_referenced,
                "chunks_removed": r.chunks_removed,
                "bytes_removed": r.bytes_removed,
                "chunks_spared_young": r.chunks_spared_young,
                "leftovers_removed": r.leftovers_removed,
                "chunks_put_back": r.chunks_put_back,
                "stopped_early": r.stopped_early,
                "dry_run": dry,
            }
        )
    return json_response({"repositories": out})


def _credentials(request: web.Request, location: str) -> Credentials:
    """What `location` is opened with: a stored location's credentials, else the settings'
    (Misconfigured, a RepoError, when the stored ones cannot be decrypted)."""
    ctx = request.app[CTX]
    return locstore.lookup(ctx.settings, ctx.sessions)(location)


def _names(session: Session) -> list[str]:
    return sorted(set(session.scalars(select(RestorePointRow.repository).distinct())))


@routes.get("/api/v1/repositories")
@needs(Permission.REPOSITORIES_READ)
async def repositories(request: web.Request) -> web.Response:
    """Every repository in the catalog: used, free, stored vs logical, per VM and per job, and
    the daily samples (growth), as of the latest stored sample (`sampled_at`; the verifier
    samples every `verify.usage_seconds`). Nothing is measured or written here: `POST
    /api/v1/repositories/measure` measures now."""

    def work(session: Session) -> list[dict[str, Any]]:
        return [
            {**usage.view(session, location), "samples": usage.samples(session, location)}
            for location in _names(session)
        ]

    return json_response({"repositories": await in_session(request, work)})


@routes.post("/api/v1/repositories/measure")
@needs(Permission.REPOSITORIES_MEASURE)
async def measure_repositories(request: web.Request) -> web.Response:
    """Measure every repository in the catalog now (the chunk objects are listed), store the
    samples (alerting at the threshold) and answer as the GET does, with the ratios."""
    ctx = request.app[CTX]
    out = []
    for location in await in_session(request, _names):
        try:
            measured = await usage.measure(location, _credentials(request, location))
        except (RepoError, OSError) as exc:
            out.append({"repository": location, "error": str(exc)})
            continue

        def view(
            session: Session, location: str = location, measured: dict[str, int | None] = measured
        ) -> Any:
            now = ctx.clock()
            info = usage.record(session, location, measured, ctx.settings.verify.usage_alert_percent, now)
            return {**info, "sampled_at": iso(now), "samples": usage.samples(session, location)}

        out.append(await in_session(request, view, write=True))
    ctx.relay.kick()
    return json_response({"repositories": out})


@routes.post("/api/v1/backups/{rp_id}/pin")
@needs(Permission.BACKUPS_PIN)
async def pin_backup(request: web.Request) -> web.Response:
    """Pin a restore point: retention never removes it (until unpinned)."""
    return await _pin(request, True)


@routes.post("/api/v1/backups/{rp_id}/unpin")
@needs(Permission.BACKUPS_PIN)
async def unpin_backup(request: web.Request) -> web.Response:
    return await _pin(request, False)


async def _pin(request: web.Request, pinned: bool) -> web.Response:
    rp_id = request.match_info["rp_id"]

    def work(session: Session) -> dict[str, Any]:
        row = runstore.get_backup(session, rp_id)
        row.pinned = pinned
        return runstore.backup_view(row)

    return json_response(await in_session(request, work, write=True))
