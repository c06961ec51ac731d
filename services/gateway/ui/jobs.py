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
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.api_jobs import jobs_changed, publish_cancels, starter
from services.gateway.api_vms import VCENTERS
from services.gateway.common import CTX, bad_character, in_session, with_vcenters
from services.gateway.idempotency import answer_once
from services.gateway.ui.render import page, render
from services.scheduler.slots import next_slot
from shared.catalog import channels, job_pages, locations
from shared.catalog import jobs as jobstore
from shared.catalog import vcenters as vcstore
from shared.errors import Conflict, Invalid, PreconditionFailed, Unreachable
from shared.model.access import Permission
from shared.model.jobs import JobSpec
from shared.model.retention import Policy
from shared.model.schedules import PRESET_CRON, NeverFires, Schedule

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

RESULTS = ("succeeded", "warning", "partial", "failed", "cancelled", "running", "never")
KEEP_FIELDS = ("keep_last", "keep_within_days", "keep_hourly", "keep_daily", "keep_weekly",
               "keep_monthly", "keep_yearly")  # fmt: skip
# The form's fields in page order: the error summary lists problems in this order.
FIELDS = ("name", "vcenter", "vms", "schedule_kind", "preset", "at", "cron", "every", "timezone",
          *KEEP_FIELDS, "repository", "replicate_to", "channels", "version")  # fmt: skip
LABELS = {"name": "Name", "vcenter": "vCenter", "vms": "VMs", "schedule_kind": "Schedule",
          "preset": "Repeats", "at": "Time of day", "cron": "Cron expression", "every": "Every",
          "timezone": "Time zone", "repository": "Repository", "replicate_to": "Secondary repositories",
          "channels": "Notification channels", "version": "Version", "keep_last": "Keep the last",
          "keep_within_days": "Keep everything of the last (days)", "keep_hourly": "Hourly",
          "keep_daily": "Daily", "keep_weekly": "Weekly", "keep_monthly": "Monthly",
          "keep_yearly": "Yearly"}  # fmt: skip
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


def _values_of(job: dict[str, Any] | None) -> dict[str, Any]:
    """The form's values for a new job (empty) or an existing one."""
    if job is None:
        return {"name": "", "vcenter": "", "vms": [], "folders": [], "schedule_kind": "preset",
                "preset": "daily", "at": "02:00", "cron": "", "every": "", "every_unit": "hours",
                "timezone": "UTC", **dict.fromkeys(KEEP_FIELDS, ""), "repository": "",
                "replicate_to": [], "channels": [], "enabled": True, "version": ""}  # fmt: skip
    schedule = job["schedule"] or {}
    minutes = schedule.get("every_minutes") or 0
    hours = minutes and minutes % 60 == 0
    own = [v for v in job["vms"] if not v.get("vcenter") or v.get("vcenter") == job["vcenter"]]
    return {
        "name": job["name"],
        "vcenter": job["vcenter"],
        "vms": [v.get("moref") or v.get("name", "") for v in own],
        "folders": [s["folder"] for s in job["select"] if "folder" in s],
        "schedule_kind": schedule.get("kind", "none"),
        "preset": schedule.get("preset") or "daily",
        "at": schedule.get("at", "02:00"),
        "cron": schedule.get("cron") or "",
        "every": str(minutes // 60 if hours else minutes) if minutes else "",
        "every_unit": "hours" if hours or not minutes else "minutes",
        "timezone": schedule.get("timezone", "UTC"),
        **{k: str((job["retention"] or {}).get(k) or "") for k in KEEP_FIELDS},
        "repository": job["repository"],
        "replicate_to": list((job["options"] or {}).get("replicate_to", [])),
        "channels": list(((job["options"] or {}).get("notify") or {}).get("channels", [])),
        "enabled": job["enabled"],
        "version": job["etag"],
    }


def _posted(form: MultiDictProxy[Any]) -> dict[str, Any]:
    def one(name: str, default: str = "") -> str:
        value = form.get(name, default)
        return value.strip() if isinstance(value, str) else default

    def many(name: str) -> list[str]:
        return [v.strip() for v in form.getall(name, []) if isinstance(v, str) and v.strip()]

    values: dict[str, Any] = {
        k: one(k) for k in ("name", "vcenter", "schedule_kind", "preset", "at", "cron", "every",
                            "every_unit", "timezone", "repository", "version", *KEEP_FIELDS)
    }  # fmt: skip
    values.update(vms=many("vms"), folders=many("folders"), replicate_to=many("replicate_to"))
    values.update(channels=many("channels"), enabled=form.get("enabled") == "on")
    return values


def _number(values: dict[str, Any], field: str, errors: dict[str, str], low: int, high: int) -> int | None:
    raw = values.get(field, "")
    if raw == "":
        return None
    try:
        number = int(raw)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        errors[field] = f"{LABELS[field]}: enter a whole number from {low} to {high}, or leave it empty"
        return None
    return number


def _schedule_body(values: dict[str, Any], errors: dict[str, str]) -> dict[str, Any] | None:
    kind = values.get("schedule_kind", "none")
    zone = values.get("timezone") or "UTC"
    if kind == "none":
        return None
    if kind == "preset":
        return {"kind": "preset", "preset": values.get("preset"), "at": values.get("at"), "timezone": zone}
    if kind == "cron":
        return {"kind": "cron", "cron": values.get("cron") or None, "timezone": zone}
    if kind == "interval":
        unit = 60 if values.get("every_unit") == "hours" else 1
        every = _number(values, "every", errors, 1, 366 * 24 * 60 // unit)
        if every is None and "every" not in errors:
            errors["every"] = "Every: enter how many hours or minutes apart the runs are"
        return {"kind": "interval", "every_minutes": every * unit if every else None, "timezone": zone}
    errors["schedule_kind"] = "Schedule: choose none, a preset, cron or an interval"
    return None


def _field_of(loc: tuple[Any, ...] | list[str], values: dict[str, Any]) -> str:
    """The form field an error of the JobSpec (its location) or check_spec (its path) is about."""
    head = str(loc[0]) if loc else "vms"
    rest = [str(p) for p in loc[1:]]
    if head in ("vms", "select", "exclude"):
        return "vms"
    if head == "schedule":
        if "timezone" in rest or "at" in rest:
            return "timezone" if "timezone" in rest else "at"
        kind = values.get("schedule_kind")
        return {"cron": "cron", "interval": "every", "preset": "preset"}.get(str(kind), "schedule_kind")
    if head == "retention":
        return rest[0] if rest and rest[0] in KEEP_FIELDS else "keep_last"
    if head == "options":
        return "channels" if "notify" in rest else "replicate_to" if "replicate_to" in rest else "name"
    return head if head in FIELDS else "name"


def _spec(values: dict[str, Any], stored: dict[str, Any] | None) -> tuple[JobSpec | None, dict[str, str]]:
    """The JobSpec the form's values make (the stored job's parts the form does not show kept),
    or the errors by field, each naming the field and the fix."""
    errors: dict[str, str] = {}
    for field, value in values.items():
        for text in value if isinstance(value, list) else [value]:
            bad = bad_character(text) if isinstance(text, str) else None
            if bad:
                errors.setdefault(field if field in FIELDS else "vms", f"{LABELS.get(field, 'VMs')}: {bad}")
    if errors:
        return None, errors
    if not values["name"]:
        errors["name"] = "Enter a name for the job"
    if not values["vcenter"]:
        errors["vcenter"] = "Choose the vCenter of the job's VMs"
    if not values["vms"] and not values["folders"]:
        errors["vms"] = "Choose at least one VM or folder to back up"
    if not values["repository"]:
        errors["repository"] = "Choose a repository for the restore points"
    retention = {k: n for k in KEEP_FIELDS if (n := _number(values, k, errors, 1, 36500)) is not None}
    schedule = _schedule_body(values, errors)
    old_options = dict(stored["options"]) if stored else {}
    other_vms = (
        [v for v in stored["vms"] if v.get("vcenter") not in (None, stored["vcenter"])] if stored else []
    )
    body = {
        "name": values["name"],
        "vcenter": values["vcenter"],
        "vms": [{"moref": m} for m in values["vms"]] + other_vms,
        "select": [{"folder": f} for f in values["folders"]]
        + ([s for s in stored["select"] if "folder" not in s] if stored else []),
        "exclude": stored["exclude"] if stored else {},
        "schedule": schedule,
        "options": {
            **old_options,
            "replicate_to": [t for t in values["replicate_to"] if t != values["repository"]],
            "notify": {**(old_options.get("notify") or {}), "channels": values["channels"]},
        },
        "repository": values["repository"],
        "retention": retention,
        "enabled": values["enabled"],
    }
    try:
        spec = JobSpec.model_validate(body)
    except ValidationError as exc:
        for err in exc.errors():
            field = _field_of(tuple(err["loc"]), values)
            message = str(err["msg"]).removeprefix("Value error, ")
            errors.setdefault(field, f"{LABELS.get(field, field)}: {message}")
        spec = None
    return (None if errors else spec), errors


def _ordered(errors: dict[str, str]) -> dict[str, str]:
    return dict(sorted(errors.items(), key=lambda kv: FIELDS.index(kv[0]) if kv[0] in FIELDS else 0))


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
    body = _schedule_body(dict(values), errors)
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
    rules = {k: n for k in KEEP_FIELDS if (n := _number(dict(values), k, errors, 1, 36500)) is not None}
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
        errors=_ordered(errors or {}),
        stale=stale,
        labels=LABELS,
        presets=list(PRESET_CRON),
        keep_fields=KEEP_FIELDS,
        picker=picker,
        schedule_preview=_times(values, ctx.clock()),
        effect=await _effect(request, job["id"] if job else None, values),
        **await _choices(request, values),
    )


async def _job(request: web.Request) -> dict[str, Any]:
    ref = request.match_info["job_id"]
    return await in_session(request, lambda s: jobstore.job_view(jobstore.find_job(s, ref)))


@routes.get("/jobs/new")
@needs(Permission.JOBS_WRITE)
@page
async def new_job(request: web.Request) -> web.Response:
    values = _values_of(None)
    names = await in_session(request, lambda s: vcstore.names(s, request.app[CTX].settings))
    values["vcenter"] = request.query.get("vcenter", names[0] if len(names) == 1 else "")
    values["vms"] = [v for v in request.query.getall("vms", []) if v]
    return await _form_page(request, values, None)


@routes.get("/jobs/{job_id}/edit")
@needs(Permission.JOBS_WRITE)
@page
async def edit_job(request: web.Request) -> web.Response:
    job = await _job(request)
    return await _form_page(request, _values_of(job), job)


async def _save(request: web.Request, job: dict[str, Any] | None) -> web.Response:
    ctx = request.app[CTX]
    values = _posted(await request.post())
    if job is not None and values["version"] != job["etag"]:
        return await _stale(request, values, job)
    spec, errors = _spec(values, job)
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
            field = _field_of(exc.field.split("."), values)
            errors[field] = f"{LABELS.get(field, field)}: {exc.message}"
        except Conflict as exc:
            errors["name"] = f"Name: {exc}; choose another name"
        except Unreachable as exc:
            errors["vcenter"] = f"vCenter: {exc}"
        except PreconditionFailed:
            assert job is not None
            return await _stale(request, values, await _job(request))
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
    return await _save(request, await _job(request))


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
    job = await _job(request)
    return render(request, "jobs/_retention.html", effect=await _effect(request, job["id"], request.query))


# ---- the actions ------------------------------------------------------------------------------


def _back(form: Mapping[str, Any]) -> str:
    """Where an action returns: the list with the filters it was started from."""
    back = form.get("back")
    return back if isinstance(back, str) and back.startswith("/jobs") and "//" not in back else "/jobs"


def _refused(
    request: web.Request, status: int, title: str, message: str, run_id: str | None = None
) -> web.Response:
    return render(request, "jobs/refused.html", status, title=title, message=message, run_id=run_id)


@routes.post("/jobs/{job_id}/run")
@needs(Permission.JOBS_RUN)
@page
async def run_job(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    job = await _job(request)
    try:
        answer = await answer_once(request, starter(ctx, job["id"]))
    except Conflict as exc:
        busy = await in_session(request, lambda s: [r.id for r in jobstore.unfinished_runs(s, job["id"])])
        return _refused(
            request, 409, f"Job {job['name']} is running already", str(exc), busy[0] if busy else None
        )
    ctx.relay.kick()
    run_id = json.loads(bytes(answer.body))["run_id"]  # type: ignore[arg-type]
    raise web.HTTPSeeOther(f"/runs/{run_id}")


@routes.post("/jobs/{job_id}/cancel")
@needs(Permission.JOBS_RUN)
@page
async def cancel_job(request: web.Request) -> web.Response:
    job = await _job(request)
    runs = await in_session(request, lambda s: jobstore.cancel_job_runs(s, job["id"]), write=True)
    await publish_cancels(request, runs)
    raise web.HTTPSeeOther(_back(await request.post()))


@routes.post(r"/jobs/{job_id}/{switch:enable|disable}")
@needs(Permission.JOBS_WRITE)
@page
async def switch_job(request: web.Request) -> web.Response:
    """Enable or disable a job's schedule (one click: the other button undoes it)."""
    ctx = request.app[CTX]
    ref, on = request.match_info["job_id"], request.match_info["switch"] == "enable"
    await in_session(request, lambda s: job_pages.set_enabled(s, ref, on, ctx.clock()), write=True)
    await jobs_changed(request)
    raise web.HTTPSeeOther(_back(await request.post()))


@routes.post("/jobs/{job_id}/delete")
@needs(Permission.JOBS_WRITE)
@page
async def delete_job(request: web.Request) -> web.Response:
    form = await request.post()
    job = await _job(request)
    if form.get("confirm_name") != job["name"]:
        message = f"Type the job's name, {job['name']}, exactly to delete it. Nothing was deleted."
        return _refused(request, 422, f"Job {job['name']} was not deleted", message)
    force = form.get("force") == "on"
    try:
        gone = await in_session(request, lambda s: jobstore.delete_job(s, job["id"], force=force), write=True)
    except Conflict as exc:
        busy = await in_session(request, lambda s: [r.id for r in jobstore.unfinished_runs(s, job["id"])])
        return _refused(
            request, 409, f"Job {job['name']} was not deleted", str(exc), busy[0] if busy else None
        )
    await publish_cancels(request, gone)
    await jobs_changed(request)
    raise web.HTTPSeeOther(_back(form))
