"""/api/v1/jobs: list, create, read, replace, delete, run now, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.answers.jobs import Job, JobCancelled, JobDeleted, Jobs, Preview, Run, RunStarted
from services.gateway.apidoc import IDEMPOTENCY_KEY, IF_MATCH, boolean, op
from services.gateway.common import CTX, flag, in_session, json_response, read_json, with_vcenters
from services.gateway.idempotency import answer_once
from shared.catalog import jobs as jobstore
from shared.catalog.etags import matches
from shared.catalog.idempotency import Answer
from shared.catalog.runs import run_view
from shared.contracts import JOBS_CHANGED_SUBJECT, cancel_subject
from shared.model.access import Permission
from shared.model.jobs import JobSpec
from shared.vsphere import selection

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


async def publish_cancels(request: web.Request, run_ids: list[str]) -> None:
    nc = request.app[CTX].bus.nc
    for run_id in run_ids:
        with contextlib.suppress(Exception):  # best effort: the database flag is what counts
            await nc.publish(cancel_subject(run_id), b"")


async def jobs_changed(request: web.Request) -> None:
    """Tell the scheduler at once (it would see the change within its 2 s poll anyway)."""
    with contextlib.suppress(Exception):
        await request.app[CTX].bus.nc.publish(JOBS_CHANGED_SUBJECT, b"")


async def _resolved_spec(request: web.Request, job_id: str | None) -> JobSpec:
    """Validate the body, check vcenter and name, then resolve the VMs against vCenter."""
    spec = JobSpec.model_validate(await read_json(request))
    ctx, settings = request.app[CTX], await with_vcenters(request)
    return await asyncio.to_thread(jobstore.check_spec, ctx.sessions, spec, settings, job_id)


async def _job_id(request: web.Request) -> str:
    ref = request.match_info["job_id"]
    return await in_session(request, lambda s: jobstore.find_job(s, ref).id)


@routes.get("/api/v1/jobs")
@needs(Permission.JOBS_READ)
@op("Every job", answer=Jobs, cli="vbm job list --json")
async def list_jobs(request: web.Request) -> web.Response:
    jobs = await in_session(request, lambda s: [jobstore.job_view(j) for j in jobstore.list_jobs(s)])
    return json_response({"jobs": jobs, "total": len(jobs)})


@routes.post("/api/v1/jobs")
@needs(Permission.JOBS_WRITE)
@op(
    "Create a job",
    description="Its VMs are resolved against vCenter now (each stored with moref and name); the"
    " answer's ETag header and etag field are its version, for If-Match. 409 when the name is"
    " taken; 502 when a vCenter it names cannot be asked.",
    body=JobSpec,
    answer=Job,
    status=201,
    errors=(409, 502),
    cli="vbm job create --name NAME --vm VM --json",
)
async def create_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    spec = await _resolved_spec(request, None)
    default_repo = ctx.settings.repository_location
    view = await in_session(
        request,
        lambda s: jobstore.job_view(jobstore.create_job(s, spec, ctx.clock(), default_repo)),
        write=True,
    )
    log.info("job %s (%s) created", view["id"], view["name"])
    await jobs_changed(request)
    return json_response(view, 201, headers={"Location": f"/api/v1/jobs/{view['id']}", "ETag": view["etag"]})


@routes.get("/api/v1/jobs/{job_id}")
@needs(Permission.JOBS_READ)
@op("A job, by id or name (its ETag as header too)", answer=Job, cli="vbm job show JOB --json")
async def get_job(request: web.Request) -> web.Response:
    ref = request.match_info["job_id"]
    view = await in_session(request, lambda s: jobstore.job_view(jobstore.find_job(s, ref)))
    return json_response(view, headers={"ETag": view["etag"]})


@routes.put("/api/v1/jobs/{job_id}")
@needs(Permission.JOBS_WRITE)
@op(
    "Replace a job",
    description="Replace a job (its id, creation time and schedule position stay). With If-Match"
    " (optional), only while its ETag is that one: 412 names the current ETag. 409 when the name"
    " is another job's; 502 when a vCenter it names cannot be asked.",
    query=(IF_MATCH,),
    body=JobSpec,
    answer=Job,
    errors=(409, 412, 502),
    cli="vbm job edit JOB --json",
)
async def replace_job(request: web.Request) -> web.Response:
    """Replace a job; with `If-Match`, only while its ETag is that one (412 names the current)."""
    ctx = request.app[CTX]
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        matches(if_match, "")  # a malformed header is refused before vCenter is asked
    job_id = await _job_id(request)
    spec = await _resolved_spec(request, job_id)
    default_repo = ctx.settings.repository_location

    def replace(s: Session) -> dict[str, object]:
        job = jobstore.replace_job(s, job_id, spec, ctx.clock(), default_repo, if_match)
        return jobstore.job_view(job)

    view = await in_session(request, replace, write=True)
    ctx.relay.kick()  # copies of earlier restore points to a secondary it added
    await jobs_changed(request)
    return json_response(view, headers={"ETag": str(view["etag"])})


@routes.delete("/api/v1/jobs/{job_id}")
@needs(Permission.JOBS_WRITE)
@op(
    "Delete a job (its restore points stay)",
    description="Refused (409, naming the run) while a run of it is running, unless force=true:"
    " then its unfinished runs are cancelled and named in the answer.",
    query=(boolean("force", "delete it even while it runs (its runs are cancelled)"),),
    answer=JobDeleted,
    errors=(409,),
    cli="vbm job delete JOB --yes --force --json",
)
async def delete_job(request: web.Request) -> web.Response:
    force = flag(request, "force")
    job_id = await _job_id(request)
    gone = await in_session(request, lambda s: jobstore.delete_job(s, job_id, force=force), write=True)
    await publish_cancels(request, gone)
    await jobs_changed(request)
    log.info("job %s deleted%s", job_id, f" with unfinished runs {', '.join(gone)}" if gone else "")
    return json_response({"deleted": job_id, "cancelled_runs": gone})


@routes.post("/api/v1/jobs/{job_id}/run")
@needs(Permission.JOBS_RUN)
@op(
    "Run a job now",
    description="Start a run now (trigger api); Location names it. A job runs once at a time: while"
    " a run of it is queued or running, 409 names that run. With an Idempotency-Key, a retry"
    " answers the first answer (Idempotent-Replayed: true) and starts nothing twice.",
    query=(IDEMPOTENCY_KEY,),
    answer=RunStarted,
    status=202,
    errors=(409,),
    cli="vbm job run JOB --idempotency-key KEY --json",
)
async def run_job(request: web.Request) -> web.Response:
    """Start a run now: 409 names the run in progress; an `Idempotency-Key` makes a retry
    answer the first answer (services/gateway/idempotency.py)."""
    ctx = request.app[CTX]

    def start(session: Session) -> Answer:
        job = jobstore.find_job(session, request.match_info["job_id"])
        run = run_view(jobstore.run_now(session, job, "api", ctx.clock()))
        return Answer(202, {"run_id": run["id"], "run": run}, f"/api/v1/runs/{run['id']}")

    answer = await answer_once(request, start)
    ctx.relay.kick()
    return answer


@routes.post("/api/v1/jobs/{job_id}/cancel")
@needs(Permission.JOBS_RUN)
@op(
    "Stop every unfinished run of a job",
    answer=JobCancelled,
    status=202,
    cli="vbm job cancel JOB --json",
)
async def cancel_job(request: web.Request) -> web.Response:
    job_id = await _job_id(request)
    runs = await in_session(request, lambda s: jobstore.cancel_job_runs(s, job_id), write=True)
    await publish_cancels(request, runs)
    return json_response({"job_id": job_id, "cancelled_runs": runs}, 202)


@routes.post("/api/v1/runs/{run_id}/cancel")
@needs(Permission.JOBS_RUN)
@op(
    "Stop a run",
    description="Stop one run: its movers stop within a second, its snapshots are removed. 409"
    " when it has ended already.",
    answer=Run,
    status=202,
    errors=(409,),
    cli="vbm run cancel RUN_ID --json",
)
async def cancel_run(request: web.Request) -> web.Response:
    """Stop one run: its movers stop within a second, its snapshots are removed."""
    run_id = request.match_info["run_id"]
    run = await in_session(request, lambda s: run_view(jobstore.cancel_run(s, run_id)), write=True)
    await publish_cancels(request, [run_id])
    return json_response(run, 202)


@routes.post("/api/v1/jobs/preview")
@needs(Permission.JOBS_READ)
@op(
    "What a job body would hold today (nothing is saved)",
    body=JobSpec,
    answer=Preview,
    cli="vbm job create --name NAME --vm VM --preview --json",
)
async def preview_spec(request: web.Request) -> web.Response:
    """What a job body would hold today (nothing is saved): its VMs, why each, skipped disks."""
    spec = JobSpec.model_validate(await read_json(request))
    settings = await with_vcenters(request)
    return json_response(await asyncio.to_thread(jobstore.preview_spec, settings, spec))


@routes.get("/api/v1/jobs/{job_id}/preview")
@needs(Permission.JOBS_READ)
@op("What a job holds today", answer=Preview, cli="vbm job preview JOB --json")
async def preview_job(request: web.Request) -> web.Response:
    """What a job holds today: its selection resolved against each vCenter now."""
    ref = request.match_info["job_id"]

    def read(s: Session) -> selection.JobSelection:
        return selection.of_job(jobstore.find_job(s, ref))

    chosen = await in_session(request, read)
    settings = await with_vcenters(request)
    return json_response(await asyncio.to_thread(jobstore.preview, settings, chosen))
