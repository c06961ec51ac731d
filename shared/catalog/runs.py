"""Runs, their tasks and the restore point catalog, as the REST API and the CLI show them."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.catalog import listing, runlog
from shared.catalog.listing import Paged, Window
from shared.clock import iso
from shared.contracts import RUN_FINAL as FINISHED
from shared.contracts import JobRequested, VerifyRequested
from shared.db.models import Job, RestorePointRow, Run, Task
from shared.errors import NotFound
from shared.model.jobs import Trigger
from shared.model.schedules import run_id_for
from shared.observe import tracing
from shared.runtime.outbox import stage


def run_view(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "job_id": run.job_id,
        "trigger": run.trigger,
        "slot": iso(run.slot),
        "state": run.state,
        "finished": run.state in FINISHED,
        "error": run.error,
        "cancel_requested": run.cancel_requested,
        "wait_reason": run.wait_reason,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
    }


def eta_seconds(task: Task) -> float | None:
    """Seconds left at the current rate, while the task moves bytes; None otherwise."""
    if task.finished_at is not None or task.rate <= 0 or task.bytes_total <= task.bytes_done:
        return None
    return round((task.bytes_total - task.bytes_done) / task.rate, 1)


def task_view(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "vcenter": task.vcenter,
        "vm_moref": task.vm_moref,
        "vm_name": task.vm_name,
        "phase": task.phase,
        "state": task.state,
        "outcome": ("warning" if task.warnings else "succeeded") if task.state == "succeeded" else task.state,
        "wait_reason": task.wait_reason,
        "not_before": iso(task.not_before),
        "tries": task.tries,
        "warnings": list(task.warnings or []),
        "host": task.host,
        "datastores": list(task.datastores or []),
        "kind": task.kind,
        "bytes_done": task.bytes_done,
        "bytes_total": task.bytes_total,
        "bytes_read": task.bytes_read,
        "bytes_stored": task.bytes_stored,
        "rate": task.rate,
        "eta_s": eta_seconds(task),
        "snapshot_moref": task.snapshot_moref,
        "restore_point_id": task.restore_point_id,
        "error": task.error,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "finished_at": iso(task.finished_at),
    }


def list_runs(
    session: Session,
    window: Window,
    *,
    job: str | None = None,
    state: str | None = None,
    trigger: str | None = None,
) -> Paged:
    """Runs by creation time; `job` is a job id or name."""
    query = select(Run)
    if job:
        named = select(Job.id).where(Job.name == job).scalar_subquery()
        query = query.where(or_(Run.job_id == job, Run.job_id == named))
    if state:
        query = query.where(Run.state == state)
    if trigger:
        query = query.where(Run.trigger == trigger)
    return listing.page(session, query, Run.created_at, Run.id, window)


def get_run(session: Session, run_id: str) -> tuple[Run, list[Task]]:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    tasks = session.scalars(select(Task).where(Task.run_id == run_id).order_by(Task.vm_name, Task.id))
    return run, list(tasks)


def run_detail(session: Session, run_id: str) -> dict[str, Any]:
    run, tasks = get_run(session, run_id)
    return {**run_view(run), "tasks": [task_view(t) for t in tasks]}


def log_view(session: Session, run_id: str, after: int = 0) -> dict[str, Any]:
    """The run's log after line `after`, as `GET /api/v1/runs/{id}/log` and `vbm run log --json`
    give it (NotFound for an unknown run)."""
    get_run(session, run_id)
    lines = [{**line, "at": iso(line["at"])} for line in runlog.lines(session, run_id, after=after)]
    return {"run_id": run_id, "lines": lines}


def backup_view(row: RestorePointRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_id": row.job_id,
        "run_id": row.run_id,
        "task_id": row.task_id,
        "vcenter": row.vcenter,
        "vm_moref": row.vm_moref,
        "vm_name": row.vm_name,
        "repository": row.repository,
        "kind": row.kind,
        "parent": row.parent,
        "disks": row.disks,
        "logical_bytes": row.logical_bytes,
        "bytes_read": row.bytes_read,
        "bytes_stored": row.bytes_stored,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "verify_state": row.verify_state,
        "verified_at": iso(row.verified_at),
        "verify_problems": row.verify_problems,
        "verify_notes": row.verify_notes,
        "verify_how": row.verify_how,
        "verify_requested_at": iso(row.verify_requested_at),
        "pinned": row.pinned,
    }


def list_backups(
    session: Session,
    window: Window,
    *,
    vm: str | None = None,
    job: str | None = None,
    vcenter: str | None = None,
    verify: str | None = None,
) -> Paged:
    """By finish time; `vm` matches a VM name or moref, `job` a job id or name, `vcenter` the
    vCenter's name (VM names and morefs repeat across vCenters), `verify` the verification state."""
    query = select(RestorePointRow)
    if vm:
        query = query.where(or_(RestorePointRow.vm_name == vm, RestorePointRow.vm_moref == vm))
    if vcenter:
        query = query.where(RestorePointRow.vcenter == vcenter)
    if job:
        named = select(Job.id).where(Job.name == job).scalar_subquery()
        query = query.where(or_(RestorePointRow.job_id == job, RestorePointRow.job_id == named))
    if verify:
        query = query.where(RestorePointRow.verify_state == verify)
    return listing.page(session, query, RestorePointRow.finished_at, RestorePointRow.id, window)


def get_backup(session: Session, rp_id: str) -> RestorePointRow:
    row = session.get(RestorePointRow, rp_id)
    if row is None:
        raise NotFound(f"no restore point {rp_id!r}")
    return row


def request_verify(session: Session, rp_id: str, now: datetime) -> str:
    """Ask the verifier to check a restore point now; its VerifyRequested is staged here."""
    row = get_backup(session, rp_id)
    request_id = f"verify-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    row.verify_requested_at = now
    stage(session, VerifyRequested(occurred_at=now, request_id=request_id, restore_point_id=rp_id), now)
    return request_id


def verify_request(session: Session, rp_id: str, now: datetime) -> dict[str, Any]:
    """`request_verify`, answered as `POST /api/v1/backups/{id}/verify` and `vbm verify` do."""
    request_id = request_verify(session, rp_id, now)
    return {"request_id": request_id, "restore_point_id": rp_id, "status": "queued"}


def set_pinned(session: Session, rp_id: str, pinned: bool) -> dict[str, Any]:
    """Pin (retention never removes it) or unpin a restore point; its view after."""
    row = get_backup(session, rp_id)
    row.pinned = pinned
    return backup_view(row)


def request_run(
    session: Session,
    job: Job,
    *,
    trigger: Trigger,
    now: datetime,
    slot: datetime | None = None,
) -> Run | None:
    """Create the run of `job` for `slot` (or a manual run) and stage its JobRequested.

    Returns None when the run exists already (a slot runs once, however often it is asked for).
    """
    nonce = "" if slot is not None else secrets.token_hex(2)
    run_id = run_id_for(job.id, slot, now, nonce)
    if session.get(Run, run_id) is not None:
        return None
    if trigger == "schedule":
        waiting = session.scalar(
            select(Run).where(Run.job_id == job.id, Run.state == "queued", Run.started_at.is_(None)).limit(1)
        )
        if waiting is not None:  # a slot while the last one still waits to start: one run covers both
            runlog.write(session, waiting.id, f"the slot of {slot:%Y-%m-%d %H:%M} UTC joins this run", now)
            return None
    run = Run(
        id=run_id,
        job_id=job.id,
        trigger=trigger,
        slot=slot,
        state="queued",
        created_at=now,
        trace_context=tracing.carrier() or None,  # work started later on its own joins its trace
    )
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:  # another scheduler or gateway created it first
        return None
    if (job.options or {}).get("restore_test"):
        from shared.catalog.restores import start_restore_tests

        start_restore_tests(session, job, run, now)
        return run
    stage(
        session,
        JobRequested(occurred_at=now, run_id=run_id, job_id=job.id, trigger=trigger, slot=slot),
        now,
    )
    return run
