"""The answers of /api/v1/jobs, /api/v1/vms and the previews of a job's selection, as the views
of shared/catalog/jobs.py (job_view, preview), shared/catalog/runs.py (run_view) and
shared/catalog/vms.py (vm_view, listing) make them. A job's stored parts are described by the
models its body is validated with (shared/model/jobs.py): what was accepted is what is shown."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from shared.model.jobs import JobOptions
from shared.model.retention import Policy
from shared.model.schedules import Schedule
from shared.model.selection import Exclusions, Selector, VMRef


class Job(BaseModel):
    """A job (job_view); its ETag is also the ETag header of GET, POST and PUT."""

    id: str
    name: str
    vcenter: str
    vms: list[VMRef] = Field(description="VMs listed by the job, each with moref and name as resolved")
    select: list[Selector] = Field(description="selectors resolved at every run")
    exclude: Exclusions
    schedule: Schedule | None = Field(description="null: run only by hand")
    options: JobOptions
    repository: str = Field(description="where its restore points go (the default filled in)")
    retention: Policy = Field(description="empty: the global retention applies")
    enabled: bool
    last_slot: datetime | None = Field(description="the last schedule slot it ran for")
    created_at: datetime
    updated_at: datetime
    etag: str = Field(description="give it as If-Match to PUT: refused with 412 if the job changed since")


class Jobs(BaseModel):
    """Every job, by name (not paged)."""

    jobs: list[Job]
    total: int


class JobDeleted(BaseModel):
    deleted: str = Field(description="the job's id")
    cancelled_runs: list[str] = Field(description="unfinished runs that went with it (force=true)")


class JobCancelled(BaseModel):
    job_id: str
    cancelled_runs: list[str] = Field(description="the runs asked to stop; empty when none was unfinished")


class Run(BaseModel):
    """A run of a job (run_view)."""

    id: str
    job_id: str
    trigger: str = Field(description="schedule, manual, api or retry")
    slot: datetime | None = Field(description="the schedule slot it runs for; null when started by hand")
    state: str
    finished: bool
    error: str | None
    cancel_requested: bool
    wait_reason: str | None = Field(description="while queued: what it waits for")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunStarted(BaseModel):
    """The run a job was asked for (Location: /api/v1/runs/{run_id})."""

    run_id: str
    run: Run


class SkippedDisk(BaseModel):
    key: int
    label: str
    reason: str = Field(description="excluded by the job, or why a backup cannot read it")


class PreviewVM(BaseModel):
    vcenter: str
    moref: str
    name: str
    chosen_by: str = Field(description="listed, or the selector that chose it")
    host: str | None
    datastores: list[str]
    skipped_disks: list[SkippedDisk]


class PreviewUnreachable(BaseModel):
    vcenter: str
    error: str


class Preview(BaseModel):
    """The VMs a selection holds now; a vCenter that cannot be read is named, the others' VMs listed."""

    vms: list[PreviewVM]
    total: int
    unreachable: list[PreviewUnreachable]


class VMDisk(BaseModel):
    key: int
    label: str
    capacity: int = Field(description="bytes")


class VMSnapshot(BaseModel):
    name: str
    moref: str
    created: datetime | None


class VM(BaseModel):
    vcenter: str
    name: str
    moref: str
    uuid: str
    power_state: str = Field(description="poweredOn, poweredOff or suspended")
    cbt: bool = Field(description="Changed Block Tracking is on")
    disks: list[VMDisk]
    snapshots: list[VMSnapshot]


class VMsUnreachable(BaseModel):
    vcenter: str
    url: str | None = Field(description="null: a vCenter added through the API whose password cannot be read")
    error: str


class VMs(BaseModel):
    """Every VM of the vCenters asked, by vCenter and name (not paged)."""

    vms: list[VM]
    total: int
    vcenters: list[str] = Field(description="the vCenters asked (answering or not)")
    unreachable: list[VMsUnreachable]
