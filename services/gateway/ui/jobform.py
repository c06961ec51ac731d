"""The job form's values: what the form shows for a new or an existing job, what a post holds,
and the `JobSpec` it becomes (the REST API's body, checked as the API checks it), with each
problem named by the form's field (services/gateway/ui/jobs.py renders it)."""

from __future__ import annotations

from typing import Any

from multidict import MultiDictProxy
from pydantic import ValidationError

from services.gateway.common import bad_character
from shared.model.jobs import JobSpec

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


def values_of(job: dict[str, Any] | None) -> dict[str, Any]:
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


def posted(form: MultiDictProxy[Any]) -> dict[str, Any]:
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


def number(values: dict[str, Any], field: str, errors: dict[str, str], low: int, high: int) -> int | None:
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


def schedule_body(values: dict[str, Any], errors: dict[str, str]) -> dict[str, Any] | None:
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
        every = number(values, "every", errors, 1, 366 * 24 * 60 // unit)
        if every is None and "every" not in errors:
            errors["every"] = "Every: enter how many hours or minutes apart the runs are"
        return {"kind": "interval", "every_minutes": every * unit if every else None, "timezone": zone}
    errors["schedule_kind"] = "Schedule: choose none, a preset, cron or an interval"
    return None


def field_of(loc: tuple[Any, ...] | list[str], values: dict[str, Any]) -> str:
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


def spec_of(values: dict[str, Any], stored: dict[str, Any] | None) -> tuple[JobSpec | None, dict[str, str]]:
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
    retention = {k: n for k in KEEP_FIELDS if (n := number(values, k, errors, 1, 36500)) is not None}
    schedule = schedule_body(values, errors)
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
            field = field_of(tuple(err["loc"]), values)
            message = str(err["msg"]).removeprefix("Value error, ")
            errors.setdefault(field, f"{LABELS.get(field, field)}: {message}")
        spec = None
    return (None if errors else spec), errors


def ordered(errors: dict[str, str]) -> dict[str, str]:
    return dict(sorted(errors.items(), key=lambda kv: FIELDS.index(kv[0]) if kv[0] in FIELDS else 0))
