"""Jobs and runs: the validated shape of a job, and asking for a run of it.

`JobSpec` is what people send (REST body, `vbm job create`); `request_run` is the one way a run
comes to exist (scheduler and gateway both use it): it inserts the run and stages its
`JobRequested` event in the same transaction, and does nothing if that run id exists already.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.contracts import JobRequested
from shared.db.models import Job, Run
from shared.outbox import stage
from shared.pipeline import runlog
from shared.retention import Policy
from shared.schedules import Schedule, run_id_for
from shared.selection import Exclusions, Selector, VMRef

__all__ = [
    "JobOptions",
    "JobSpec",
    "NotifyOptions",
    "RestoreTestOptions",
    "Trigger",
    "VMRef",
    "check_location",
    "job_row",
    "new_job_id",
    "request_run",
]  # fmt: skip
from shared.settings import Outcome

Trigger = Literal["schedule", "manual", "api", "retry"]


class RestoreTestOptions(BaseModel):
    """Makes a job a restore-test job: each run restores the newest restore point of each of its
    VMs as a temporary VM on `network` (isolated), checks it, removes it and signs a report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    datastore: str = Field(min_length=1, max_length=255)
    network: str = Field(min_length=1, max_length=255, description="An isolated network")
    datacenter: str | None = None


MAX_LOCATION = 1024


def check_location(value: str) -> str:
    """A repository location as jobs name them: a path, s3://... or azure://... (ValueError says
    how to write one). What can never work is refused here, before it is stored."""
    if len(value) > MAX_LOCATION:
        raise ValueError(f"a repository location is at most {MAX_LOCATION} characters, not {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 or "\ud800" <= c <= "\udfff" for c in value):
        raise ValueError("a repository location cannot hold control characters (NUL, newline...)")
    if value.startswith("s3://"):
        from shared.repo.s3 import S3Location

        S3Location(value)
    elif value.startswith("azure://"):
        from shared.repo.azure import AzureLocation

        AzureLocation(value)
    elif value.startswith("sftp://"):
        from shared.repo.sftp import SFTPLocation

        SFTPLocation(value)
    elif value.startswith("rclone://"):
        from shared.repo.rclone import RcloneLocation

        RcloneLocation(value)
    elif "://" in value:
        raise ValueError(
            f"{value.split('://', 1)[0]}:// is not a supported location: a path, s3://, azure://, sftp:// or rclone://"
        )
    elif not value.strip():
        raise ValueError("a repository location cannot be empty")
    return value


class NotifyOptions(BaseModel):
    """A job's notifications: channels it adds (by name, from `notifications.channels`) and,
    when set, which of its outcomes are sent (instead of each channel's own `on`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: tuple[str, ...] = Field(default=(), max_length=16)
    on: tuple[Outcome, ...] | None = Field(default=None, min_length=1)


class JobOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cbt: bool = Field(default=True, description="Enable and use Changed Block Tracking")
    quiesce: bool = Field(
        default=False, description="Quiesce the guest (VMware Tools), else crash-consistent"
    )
    quiesce_fallback: bool = Field(
        default=True, description="If quiescing fails, take a crash-consistent snapshot instead"
    )
    min_free_percent: float = Field(
        default=5.0, ge=0, le=90, description="Refuse to snapshot when a datastore has less free"
    )
    restore_test: RestoreTestOptions | None = Field(
        default=None, description="Set: the job tests restores of its VMs instead of backing them up"
    )
    notify: NotifyOptions = Field(
        default_factory=NotifyOptions, description="Notification channels and outcomes of this job"
    )
    replicate_to: tuple[str, ...] = Field(
        default=(),
        max_length=4,
        description="Secondary repositories each verified restore point is copied to (3-2-1)",
    )
    max_parallel_vms: int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description="VMs of this job backed up at once (default: limits.vms_per_job)",
    )
    retries: int | None = Field(
        default=None, ge=0, le=10, description="Tries again of a VM that fails (default: pipeline.retries)"
    )

    @field_validator("replicate_to")
    @classmethod
    def _targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for location in value:
            check_location(location)
        if len(set(value)) != len(value):
            raise ValueError("the same secondary repository is listed twice")
        return value


Retention = Policy  # a job's retention: shared/retention.py (empty: the global default applies)


class JobSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
    vcenter: str = Field(min_length=1, max_length=64)
    vms: tuple[VMRef, ...] = Field(default=(), max_length=5000, description="VMs by moref or name")
    select: tuple[Selector, ...] = Field(
        default=(), max_length=100, description="VMs chosen at every run: folder, cluster, host, pool, tag..."
    )
    exclude: Exclusions = Field(default_factory=Exclusions, description="VMs and disks left out")
    schedule: Schedule | None = None
    options: JobOptions = JobOptions()
    repository: str = Field(default="", description="Repository location; empty: the default")
    retention: Retention = Retention()
    enabled: bool = True

    @field_validator("repository")
    @classmethod
    def _location(cls, value: str) -> str:
        return check_location(value) if value else value

    @field_validator("vms")
    @classmethod
    def _distinct(cls, vms: tuple[VMRef, ...]) -> tuple[VMRef, ...]:
        keys = [(v.vcenter, v.moref or f"name:{v.name}") for v in vms]
        if len(set(keys)) != len(keys):
            raise ValueError("the same VM is listed twice")
        return vms

    @model_validator(mode="after")
    def _holds_something(self) -> JobSpec:
        if not self.vms and not self.select:
            raise ValueError("a job needs VMs: list them (vms) or select them (select: folder, tag...)")
        return self

    def vcenter_names(self) -> set[str]:
        """Every vCenter the job names (its own, and those of its VMs, selectors and exclusions)."""
        refs: list[VMRef | Selector] = [*self.vms, *self.select, *self.exclude.vms]
        refs += [r.vm for r in self.exclude.disks]
        return {self.vcenter} | {r.vcenter for r in refs if r.vcenter}


def new_job_id() -> str:
    return f"job-{secrets.token_hex(4)}"


def job_row(spec: JobSpec, job_id: str, now: datetime, default_repository: str) -> Job:
    return Job(
        id=job_id,
        name=spec.name,
        vcenter=spec.vcenter,
        vms=[v.model_dump(exclude_none=True) for v in spec.vms],
        selection={
            "select": [s.model_dump(exclude_none=True) for s in spec.select],
            "exclude": spec.exclude.model_dump(exclude_none=True),
        },
        schedule=spec.schedule.model_dump(exclude_none=True) if spec.schedule else None,
        options=spec.options.model_dump(),
        repository=spec.repository or default_repository,
        retention=spec.retention.model_dump(exclude_none=True),
        enabled=spec.enabled,
        created_at=now,
        updated_at=now,
    )


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
    )
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:  # another scheduler or gateway created it first
        return None
    if (job.options or {}).get("restore_test"):
        from shared.restores import start_restore_tests

        start_restore_tests(session, job, run, now)
        return run
    stage(
        session,
        JobRequested(occurred_at=now, run_id=run_id, job_id=job.id, trigger=trigger, slot=slot),
        now,
    )
    return run
