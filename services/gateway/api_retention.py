"""/api/v1/prune, /api/v1/gc and /api/v1/repositories: retention, garbage collection, and what
the repositories hold."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.answers import runs as answers
from services.gateway.apidoc import boolean, op, text
from services.gateway.common import CTX, credentials_for, flag, in_session, json_response
from shared.catalog import prune, usage
from shared.errors import Invalid
from shared.model.access import Permission
from shared.repo import RepoError
from shared.repo.locations import check_location

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

RP_SCOPE = (
    text("job", "only the restore points of this job (id)"),
    text("vm", "only the restore points of this VM (name or moref)"),
)


@routes.get("/api/v1/prune")
@needs(Permission.PRUNE_READ)
@op(
    "What retention does now to each restore point (nothing is removed)",
    query=RP_SCOPE,
    answer=answers.PrunePreview,
    cli="vbm prune --dry-run --json",
)
async def prune_preview(request: web.Request) -> web.Response:
    """Every restore point (of `?job=`, `?vm=`, or all): keep or remove now, and the rule."""
    ctx = request.app[CTX]
    job, vm = request.query.get("job"), request.query.get("vm")

    def work(session: Session) -> list[dict[str, Any]]:
        return prune.with_expiry(session, ctx.settings, ctx.clock(), job_id=job, vm=vm)

    return json_response({"restore_points": await in_session(request, work)})


@routes.post("/api/v1/prune")
@needs(Permission.PRUNE_RUN)
@op(
    "Remove the restore points retention lets go",
    query=RP_SCOPE,
    answer=answers.PruneDone,
    cli="vbm prune --json",
)
async def prune_now(request: web.Request) -> web.Response:
    """Remove what the preview removes (manifests and catalog rows; `POST /api/v1/gc` after)."""
    ctx = request.app[CTX]
    job, vm = request.query.get("job"), request.query.get("vm")
    done = await prune.apply(ctx.sessions, ctx.settings, ctx.clock(), job_id=job, vm=vm)
    return json_response({"removed": [{"id": rp_id, "rule": reason} for rp_id, reason in done]})


@routes.post("/api/v1/gc")
@needs(Permission.PRUNE_RUN)
@op(
    "Reclaim the chunks no restore point references",
    query=(
        text("repository", "only this repository (default: every one, and the secondaries)"),
        boolean("dry_run", "count what would be freed, delete nothing"),
    ),
    answer=answers.GCDone,
    errors=(409,),
    cli="vbm gc --json",
)
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
                ctx.sessions, location, credentials_for(request)(location), ctx.clock(), dry_run=dry
            )
        except RepoError as exc:
            raise web.HTTPConflict(text=f"{location}: {exc}") from None
        out.append(prune.gc_view(location, r, dry))
    return json_response({"repositories": out})


@routes.get("/api/v1/repositories")
@needs(Permission.REPOSITORIES_READ)
@op(
    "Repositories: used, free, per VM and job, growth",
    answer=answers.Repositories,
    cli="vbm repo usage --json",
)
async def repositories(request: web.Request) -> web.Response:
    """Every repository in the catalog: used, free, stored vs logical, per VM and per job, and
    the daily samples (growth), as of the latest stored sample (`sampled_at`; the verifier
    samples every `verify.usage_seconds`). Nothing is measured or written here: `POST
    /api/v1/repositories/measure` measures now."""

    return json_response({"repositories": await in_session(request, usage.listing)})


@routes.post("/api/v1/repositories/measure")
@needs(Permission.REPOSITORIES_MEASURE)
@op("Measure every repository now", answer=answers.Measured, cli="vbm repo measure --json")
async def measure_repositories(request: web.Request) -> web.Response:
    """Measure every repository in the catalog now (the chunk objects are listed), store the
    samples (alerting at the threshold) and answer as the GET does, with the ratios."""
    ctx = request.app[CTX]
    out = []
    for location in await in_session(request, usage.locations):
        try:
            measured = await usage.measure(location, credentials_for(request)(location))
        except (RepoError, OSError) as exc:
            out.append({"repository": location, "error": str(exc)})
            continue

        def view(
            session: Session, location: str = location, measured: dict[str, int | None] = measured
        ) -> Any:
            threshold = ctx.settings.verify.usage_alert_percent
            return usage.recorded(session, location, measured, threshold, ctx.clock())

        out.append(await in_session(request, view, write=True))
    ctx.relay.kick()
    return json_response({"repositories": out})
