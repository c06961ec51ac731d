"""The Jobs pages: the list (schedule in words, next run, retention, last result, filters in the
query string), one form to create and edit a job (VM picker, schedule builder with the next five
times, retention with what it would keep and remove, repository and secondaries, notification
channels), and the actions: run now, cancel, enable or disable, delete with the job's name typed.

Everything goes through what the REST API uses (services/gateway/api_jobs.py): the form becomes
the same `JobSpec`, checked by `jobstore.check_spec`; an edit carries the version (ETag) it read,
and a save from an older version is refused as a PUT with a stale If-Match is (412); run now is
the same idempotent start as POST /api/v1/jobs/{id}/run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.api_jobs import jobs_changed
from services.gateway.api_vms import VCENTERS
from services.gateway.common import CTX, in_session, with_vcenters
from services.gateway.ui.jobform import (
    KEEP_FIELDS,
    LABELS,
    field_of,
    number,
    ordered,
    posted,
    schedule_body,
    spec_of,
    values_of,
)
from services.gateway.ui.render import page, render
from shared.catalog import channels, job_pages, locations
from shared.catalog import jobs as jobstore
from shared.catalog import vcenters as vcstore
from shared.errors import Conflict, Invalid, PreconditionFailed, Unreachable
from shared.model.access import Permission
from shared.model.retention import Policy
from shared.model.schedules import PRESET_CRON, NeverFires, Schedule
from shared.model.slots import next_slot

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

RESULTS = ("succeeded", "warning", "partial", "failed", "cancelled", "running", "never")
PICKER_LIMIT = 200
TIMES = 5


# ---- the list -------------------------------------------------------------------------------


def _filters(query: Mapping[str, str]) -> dict[str, str]:
    """The list's filters from the query string; an unknown one or an odd value is a 422 page."""
    unknown = sorted(set(query) - {"enabled", "result"})
    if unknown:
        raise Invalid(unknown[0], "unknown filter (known: enabled, result)", where="query")
    enabled, result = query.get("enabled", ""), query.get("result", "")
    if enabled not in ("", "yes", "no"):
        raise Invalid("enabled", "use enabled=yes or enabled=no", where="query")
    if result not in ("", *RESULTS):
        raise Invalid("result", f"use one of {', '.join(RESULTS)}", where="query")
    return {"enabled": enabled, "result": result}


def _result_of(job: dict[str, Any]) -> str:
    if job["active_run"] is not None:
        return "running"
    return job["last_run"]["state"] if job["last_run"] else "never"


def upcoming(schedule: Schedule, after: datetime, count: int = TIMES) -> list[datetime]:
    """The next `count` slots of a schedule, as the scheduler counts them (services/scheduler)."""
    out: list[datetime] = []
    cursor = after
    for _ in range(count):
        try:
            cursor = next_slot(schedule, cursor)
        except NeverFires:
            break
        out.append(cursor)
    return out


def _next_run(job: dict[str, Any], now: datetime) -> datetime | None:
    if not job["enabled"] or not job["schedule"]:
        return None
    try:
        found = upcoming(Schedule.model_validate(job["schedule"]), now, 1)
    except ValueError:
        return None
    return found[0] if found else None


def _chip(filters: dict[str, str], **change: str) -> str:
    """The list's address with one filter changed (empty: dropped)."""
    merged = {k: v for k, v in {**filters, **change}.items() if v}
    return "/jobs" + ("?" + "&".join(f"{k}={v}" for k, v in merged.items()) if merged else "")


@routes.get("/jobs")
@needs(Permission.JOBS_READ)
@page
async def jobs_list(request: web.Request) -> web.Response:
    filters = _filters(request.query)
    ctx = request.app[CTX]
    now = ctx.clock()
    every = await in_session(request, lambda s: job_pages.job_rows(s, ctx.settings))
    for job in every:
        job["result"] = _result_of(job)
        job["next_run"] = _next_run(job, now)
    shown = [
        j
        for j in every
        if (not filters["enabled"] or j["enabled"] == (filters["enabled"] == "yes"))
        and (not filters["result"] or j["result"] == filters["result"])
    ]
    counts = {r: sum(1 for j in every if j["result"] == r) for r in RESULTS}
    return render(
        request,
        "jobs/list.html",
        jobs=shown,
        total=len(every),
        filters=filters,
        counts=counts,
        enabled_count=sum(1 for j in every if j["enabled"]),
        results=RESULTS,
        chip=lambda **change: _chip(filters, **change),
        back=request.path_qs,
    )


# ---- the form -------------------------------------------------------------------------------


async def _choices(request: web.Request, values: dict[str, Any]) -> dict[str, Any]:
    """What the form's pickers offer: vCenters, repositories, notification channels."""
    settings = request.app[CTX].settings

    def read(s: Session) -> dict[str, Any]:
        repos = [(v["url"], f"{v['name']} ({v['url']})") for v in locations.list_views(s, settings)]
        known = {url for url, _ in repos}
        for chosen in [values["repository"], *values["replicate_to"]]:
            if chosen and chosen not in known:
                repos.append((chosen, chosen))
                known.add(chosen)
        return {
            "vcenters": vcstore.names(s, settings),
            "repositories": repos,
            "channel_names": channels.names(s, settings),
        }

    return await in_session(request, read)


def _times(values: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The next five times of the form's schedule, in its time zone, or why there are none."""
    errors: dict[str, str] = {}
    body = schedule_body(dict(values), errors)
    if errors:
        return {"times": [], "zone": "", "problem": next(iter(errors.values()))}
    if body is None:
        return {"times": [], "zone": "", "problem": "No schedule: the job runs only when started."}
    try:
        schedule = Schedule.model_validate(body)
    except ValidationError as exc:
        return {"times": [], "zone": "", "problem": str(exc.errors()[0]["msg"]).removeprefix("Value error, ")}
    zone = ZoneInfo(schedule.timezone)
    slots = upcoming(schedule, now)
    return {
        "times": [(t, t.astimezone(zone).strftime("%a %d %b %Y, %H:%M")) for t in slots],
        "zone": schedule.timezone,
        "problem": None if slots else "This schedule never fires.",
    }


async def _effect(
    request: web.Request, job_id: str | None, values: Mapping[str, Any]
) -> dict[str, Any] | None:
    """What the form's retention would keep and remove of an existing job's restore points."""
    if job_id is None:
        return None
    errors: dict[str, str] = {}
    rules = {k: n for k in KEEP_FIELDS if (n := number(dict(values), k, errors, 1, 36500)) is not None}
    if errors:
        return {"problem": next(iter(errors.values()))}
    ctx = request.app[CTX]
    policy = Policy.model_validate(rules)
    return await in_session(
        request, lambda s: job_pages.retention_effect(s, ctx.settings, ctx.clock(), job_id, policy)
    )


async def _form_page(
    request: web.Request,
    values: dict[str, Any],
    job: dict[str, Any] | None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    stale: str | None = None,
) -> web.Response:
    ctx = request.app[CTX]
    picker = await _picker(request, values["vcenter"], "", values["vms"], values["folders"])
    return render(
        request,
        "jobs/form.html",
        status,
        job=job,
        values=values,
        errors=ordered(errors or {}),
        stale=stale,
        labels=LABELS,
        presets=list(PRESET_CRON),
        keep_fields=KEEP_FIELDS,
        picker=picker,
        schedule_preview=_times(values, ctx.clock()),
        effect=await _effect(request, job["id"] if job else None, values),
        **await _choices(request, values),
    )


async def job_of(request: web.Request) -> dict[str, Any]:
    ref = request.match_info["job_id"]
    return await in_session(request, lambda s: jobstore.job_view(jobstore.find_job(s, ref)))


@routes.get("/jobs/new")
@needs(Permission.JOBS_WRITE)
@page
async def new_job(request: web.Request) -> web.Response:
    values = values_of(None)
    names = await in_session(request, lambda s: vcstore.names(s, request.app[CTX].settings))
    values["vcenter"] = request.query.get("vcenter", names[0] if len(names) == 1 else "")
    values["vms"] = [v for v in request.query.getall("vms", []) if v]
    return await _form_page(request, values, None)


@routes.get("/jobs/{job_id}/edit")
@needs(Permission.JOBS_WRITE)
@page
async def edit_job(request: web.Request) -> web.Response:
    job = await job_of(request)
    return await _form_page(request, values_of(job), job)


async def _save(request: web.Request, job: dict[str, Any] | None) -> web.Response:
    ctx = request.app[CTX]
    values = posted(await request.post())
    if job is not None and values["version"] != job["etag"]:
        return await _stale(request, values, job)
    spec, errors = spec_of(values, job)
    if spec is not None:
        settings = await with_vcenters(request)
        try:
            resolved = await asyncio.to_thread(
                jobstore.check_spec, ctx.sessions, spec, settings, job["id"] if job else None
            )
            default_repo = ctx.settings.repository_location
            if job is None:
                saved = await in_session(
                    request,
                    lambda s: jobstore.job_view(jobstore.create_job(s, resolved, ctx.clock(), default_repo)),
                    write=True,
                )
            else:
                saved = await in_session(
                    request,
                    lambda s: jobstore.job_view(
                        jobstore.replace_job(
                            s, job["id"], resolved, ctx.clock(), default_repo, values["version"]
                        )
                    ),
                    write=True,
                )
                ctx.relay.kick()
        except Invalid as exc:
            field = field_of(exc.field.split("."), values)
            errors[field] = f"{LABELS.get(field, field)}: {exc.message}"
        except Conflict as exc:
            errors["name"] = f"Name: {exc}; choose another name"
        except Unreachable as exc:
            errors["vcenter"] = f"vCenter: {exc}"
        except PreconditionFailed:
            assert job is not None
            return await _stale(request, values, await job_of(request))
        else:
            await jobs_changed(request)
            log.info("job %s (%s) saved from the web UI", saved["id"], saved["name"])
            raise web.HTTPSeeOther("/jobs")
    return await _form_page(request, values, job, errors, 422)


async def _stale(request: web.Request, values: dict[str, Any], current: dict[str, Any]) -> web.Response:
    """A save from a version that is no longer the job's (HTTP 412, as a PUT with a stale If-Match):
    the form comes back with the person's values and says what happened and what to do."""
    message = (
        f"Someone changed job {current['name']} since you opened this form (it was saved at"
        f" {current['updated_at']}). Your changes were not saved: open the job again to see the"
        " current version, then redo your changes."
    )
    return await _form_page(request, values, current, {"version": message}, 412, stale=message)


@routes.post("/jobs/new")
@needs(Permission.JOBS_WRITE)
@page
async def create_job(request: web.Request) -> web.Response:
    return await _save(request, None)


@routes.post("/jobs/{job_id}/edit")
@needs(Permission.JOBS_WRITE)
@page
async def save_job(request: web.Request) -> web.Response:
    return await _save(request, await job_of(request))


# ---- the form's fragments (htmx) ---------------------------------------------------------------


async def _picker(
    request: web.Request, vcenter: str, search: str, chosen: list[str], folders: list[str]
) -> dict[str, Any]:
    """The VM picker's content: the vCenter's VMs by folder (those matching `search`, and every
    chosen one), or why they cannot be listed."""
    from shared.vsphere.inventory import read_inventory

    out: dict[str, Any] = {"vcenter": vcenter, "q": search, "chosen": chosen, "folders_chosen": folders,
                           "groups": [], "problem": None, "more": 0}  # fmt: skip
    if not vcenter:
        out["problem"] = "Choose a vCenter first: its VMs are listed here."
        return out
    settings = request.app[CTX].settings
    known, broken = await in_session(request, lambda s: vcstore.usable(s, settings))
    if vcenter in broken or vcenter not in {vc.name for vc in known}:
        out["problem"] = f"vCenter {vcenter} is not configured or cannot be used: {broken.get(vcenter, '')}"
        return out
    try:
        inventory = await asyncio.to_thread(read_inventory, request.app[VCENTERS].get(vcenter))
    except Exception as exc:  # what vCenter said is shown; the form stays usable
        out["problem"] = f"vCenter {vcenter} cannot be asked now: {exc}. Chosen VMs are kept."
        return out
    needle = search.lower()
    groups: dict[str, list[Any]] = {}
    shown = 0
    for vm in sorted(inventory, key=lambda v: (v.folder, v.name)):
        if vm.template:
            continue
        picked = vm.moref in chosen or vm.name in chosen
        if not picked and needle and needle not in vm.name.lower() and needle not in vm.folder.lower():
            continue
        if not picked and shown >= PICKER_LIMIT:
            out["more"] += 1
            continue
        shown += 1
        groups.setdefault(vm.folder, []).append({"moref": vm.moref, "name": vm.name, "power": vm.power_state,
                                                 "checked": picked})  # fmt: skip
    out["groups"] = sorted(groups.items())
    listed = {vm["moref"] for _, vms in groups.items() for vm in vms} | {vm.name for vm in inventory}
    out["missing"] = [m for m in chosen if m not in listed]
    return out


@routes.get("/jobs/form/vms")
@needs(Permission.VMS_READ)
@page
async def vm_picker(request: web.Request) -> web.Response:
    q = request.query
    picker = await _picker(request, q.get("vcenter", ""), q.get("q", "")[:255], q.getall("vms", []),
                           q.getall("folders", []))  # fmt: skip
    return render(request, "jobs/_vms.html", picker=picker)


@routes.get("/jobs/form/times")
@needs(Permission.JOBS_READ)
@page
async def schedule_times(request: web.Request) -> web.Response:
    return render(
        request, "jobs/_times.html", schedule_preview=_times(request.query, request.app[CTX].clock())
    )


@routes.get("/jobs/{job_id}/retention")
@needs(Permission.PRUNE_READ)
@page
async def retention_preview(request: web.Request) -> web.Response:
    job = await job_of(request)
    return render(request, "jobs/_retention.html", effect=await _effect(request, job["id"], request.query))


# ---- the actions ------------------------------------------------------------------------------
