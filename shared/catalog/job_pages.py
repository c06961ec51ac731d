"""Jobs as the web UI lists them (services/gateway/ui/jobs.py): each job's view with its latest
run, the run still in progress, and its schedule and retention in words; switching a job on or
off; and what a retention policy would keep and remove of a job's restore points now (the prune
simulator of the job form). Reads and changes through the same rows and rules as the REST API
(shared/catalog/jobs.py, shared/catalog/prune.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.catalog import prune
from shared.catalog.jobs import find_job, job_view, list_jobs, unfinished_runs
from shared.catalog.runs import run_view
from shared.db.models import Job, Run
from shared.model.retention import Policy
from shared.model.schedules import Schedule
from shared.settings import Settings

WEEKDAY_PRESETS = {
    "daily": "Daily",
    "weekly": "Weekly on Sunday",
    "monthly": "Monthly on the 1st",
    "quarterly": "Quarterly (1 Jan, Apr, Jul, Oct)",
    "semi-annual": "Semi-annually (1 Jan and 1 Jul)",
    "yearly": "Yearly on 1 January",
}
RULE_WORDS = (
    ("keep_within_days", "everything of the last {} days"),
    ("keep_last", "the last {}"),
    ("keep_hourly", "{} hourly"),
    ("keep_daily", "{} daily"),
    ("keep_weekly", "{} weekly"),
    ("keep_monthly", "{} monthly"),
    ("keep_yearly", "{} yearly"),
)


def schedule_words(raw: dict[str, Any] | None) -> str:
    """A schedule as a person reads it, with its timezone: "Daily at 02:00 (UTC)"."""
    if not raw:
        return "Manual only (no schedule)"
    try:
        schedule = Schedule.model_validate(raw)
    except ValueError:
        return "Invalid schedule (edit the job)"
    zone = f" ({schedule.timezone})"
    if schedule.kind == "preset" and schedule.preset:
        return f"{WEEKDAY_PRESETS[schedule.preset]} at {schedule.at}{zone}"
    if schedule.kind == "interval" and schedule.every_minutes:
        minutes = schedule.every_minutes
        if minutes % 60 == 0:
            hours = minutes // 60
            return "Every hour" if hours == 1 else f"Every {hours} hours"
        return f"Every {minutes} minutes"
    return f"Cron {schedule.cron}{zone}"


def retention_words(raw: dict[str, Any] | None, settings: Settings) -> str:
    """A job's retention in words ("keeps 7 daily, 4 weekly"), or the global default it follows."""
    own = Policy.model_validate(raw or {})
    if own.empty():
        return f"Default: {policy_words(settings.retention)}"
    return policy_words(own)


def policy_words(policy: Policy) -> str:
    rules = [words.format(getattr(policy, field)) for field, words in RULE_WORDS if getattr(policy, field)]
    return "keeps " + ", ".join(rules) if rules else "keeps everything"


def job_rows(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Every job's view (GET /api/v1/jobs), with `last_run` (its newest finished run),
    `active_run` (one queued or running), `vm_count`, and schedule and retention in words."""
    newest = (
        select(Run.job_id, func.max(Run.created_at).label("at"))
        .where(Run.finished_at.is_not(None))
        .group_by(Run.job_id)
        .subquery()
    )
    last = {
        r.job_id: r
        for r in session.scalars(
            select(Run).join(newest, (Run.job_id == newest.c.job_id) & (Run.created_at == newest.c.at))
        )
    }
    out = []
    for job in list_jobs(session):
        view = job_view(job)
        busy = unfinished_runs(session, job.id)
        view["last_run"] = run_view(last[job.id]) if job.id in last else None
        view["active_run"] = run_view(busy[0]) if busy else None
        view["vm_count"] = len(job.vms or [])
        view["selectors"] = len(view["select"])
        view["schedule_words"] = schedule_words(job.schedule)
        view["retention_words"] = retention_words(job.retention, settings)
        out.append(view)
    return out


def set_enabled(session: Session, ref: str, enabled: bool, now: datetime) -> dict[str, Any]:
    """Switch a job's schedule on or off (its ETag changes: an edit opened before is stale)."""
    job = find_job(session, ref)
    job.enabled = enabled
    job.updated_at = now
    session.flush()
    return job_view(job)


def retention_effect(
    session: Session, settings: Settings, now: datetime, job_id: str, policy: Policy
) -> dict[str, Any]:
    """What `policy` (the global default when empty) would keep and remove of the job's restore
    points now: counts, the bytes the removed ones hold, and each point with its rule."""
    job = session.get(Job, job_id)
    effective = settings.retention if policy.empty() else policy
    decided = prune.preview(session, settings, now, job_id=job_id, policy=effective) if job else []
    points = [
        {
            "id": row.id,
            "vm_name": row.vm_name,
            "finished_at": row.finished_at,
            "keep": d.keep,
            "rule": d.reason,
            "bytes": row.bytes_stored,
        }
        for row, d, _ in decided
    ]
    removed = [p for p in points if not p["keep"]]
    return {
        "policy": policy_words(effective),
        "default": policy.empty(),
        "points": points,
        "kept": len(points) - len(removed),
        "removed": len(removed),
        "frees": sum(p["bytes"] for p in removed),
    }
