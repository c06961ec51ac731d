"""A job's validated shape: `JobSpec` is what people send (REST body, `vbm job create`).

Pure: no database, no bus. A job's row is made in `shared.catalog.jobs`, a run of it is asked for
in `shared.catalog.runs.request_run`.
"""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.model.retention import Policy
from shared.model.schedules import Schedule
from shared.model.selection import Exclusions, Selector, VMRef
from shared.repo.locations import check_location

__all__ = [
    "JobOptions",
    "JobSpec",
    "NotifyOptions",
    "RestoreTestOptions",
    "Trigger",
    "VMRef",
    "new_job_id",
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


Retention = Policy  # a job's retention: shared/model/retention.py (empty: the global default applies)


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
