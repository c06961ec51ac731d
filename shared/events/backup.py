"""The events of a backup run: requested, snapshot ready, transfer done, verified, failed, finished."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from shared.events.payload import Event, Id, Payload
from shared.events.subjects import Subject


class JobRequested(Event):
    """A run of a job was asked for (by the schedule, a person or the API).

    Published by: scheduler, gateway. Consumed by: snapshotter.
    """

    SUBJECT: ClassVar[Subject] = Subject.JOB_REQUESTED
    run_id: Id
    job_id: Id
    trigger: Literal["schedule", "manual", "api", "retry"]
    slot: datetime | None = Field(default=None, description="The schedule slot, for scheduled runs")

    def msg_id(self) -> str:
        return f"job.requested:{self.run_id}"


class DiskRef(Payload):
    key: int = Field(description="The virtual disk's device key")
    capacity_bytes: int = Field(ge=0)
    datastore_path: str = Field(description="The snapshot's frozen disk, e.g. '[ds1] vm/disk.vmdk'")
    change_id: str | None = Field(default=None, description="CBT changeId of the snapshot disk")


class SkippedDisk(Payload):
    """A disk of the VM that the backup leaves out, and why (the restore point names it too)."""

    key: int
    label: str = ""
    reason: str = Field(description="e.g. 'excluded by the job', 'an independent disk (...)'")


class SnapshotReady(Event):
    """A VM's backup snapshot exists and its disks can be read.

    Published by: snapshotter. Consumed by: mover; notifier (arms the transfer deadline).
    """

    SUBJECT: ClassVar[Subject] = Subject.SNAPSHOT_READY
    run_id: Id
    task_id: Id
    vcenter: str
    datacenter: str
    vm_moref: Id
    vm_name: str
    vmx_path: str = Field(description="The VM's configuration file, e.g. '[ds1] web/web.vmx'")
    snapshot_moref: Id
    snapshot_name: str
    disks: tuple[DiskRef, ...]
    attempt: int = Field(default=1, ge=1)
    skipped: tuple[SkippedDisk, ...] = Field(default=(), description="Disks left out, with why")

    def msg_id(self) -> str:
        return f"snapshot.ready:{self.task_id}:{self.attempt}"


class TransferDone(Event):
    """A VM's disks are in the repository as a committed restore point.

    Published by: mover. Consumed by: verifier; snapshotter (removes the snapshot).
    """

    SUBJECT: ClassVar[Subject] = Subject.TRANSFER_DONE
    run_id: Id
    task_id: Id
    restore_point_id: Id
    bytes_read: int = Field(ge=0)
    bytes_stored: int = Field(ge=0)
    attempt: int = Field(default=1, ge=1)

    def msg_id(self) -> str:
        return f"transfer.done:{self.task_id}:{self.attempt}"


class VerifyRequested(Event):
    """Verify a restore point now (a person, the API or `vbm verify`).

    Published by: gateway, CLI. Consumed by: verifier, which answers with `vbm.verify.done`.
    """

    SUBJECT: ClassVar[Subject] = Subject.VERIFY_REQUESTED
    request_id: Id
    restore_point_id: Id

    def msg_id(self) -> str:
        return f"verify.requested:{self.request_id}"


class VerifyDone(Event):
    """A restore point was checked: after its backup (run_id, task_id), on request (request_id)
    or by the scheduled re-verification (request_id 'scheduled-...').

    Published by: verifier. Consumed by: notifier, gateway.
    """

    SUBJECT: ClassVar[Subject] = Subject.VERIFY_DONE
    run_id: Id | None = None
    task_id: Id | None = None
    request_id: Id | None = None
    restore_point_id: Id
    ok: bool
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = Field(default=(), description="Not failures: e.g. a disk resized since")

    def msg_id(self) -> str:
        return f"verify.done:{self.task_id or self.request_id}:{self.restore_point_id}"


Step = Literal["schedule", "snapshot", "transfer", "verify", "cleanup"]


class StepFailed(Event):
    """A step gave up. Published by: any worker (through the bus runner). Consumed by: notifier,
    which removes the snapshot named here and raises an alert."""

    SUBJECT: ClassVar[Subject] = Subject.STEP_FAILED
    run_id: Id
    task_id: Id | None = None
    step: Step
    reason: str
    vcenter: str | None = None
    vm_moref: Id | None = None
    snapshot_moref: Id | None = None

    def msg_id(self) -> str:
        return f"step.failed:{self.run_id}:{self.task_id or '-'}:{self.step}"

    @classmethod
    def of(cls, event: Event, step: Step, reason: str, now: datetime, **where: str | None) -> StepFailed:
        """`step` gave up on what `event` asked for: its run, and the task, vCenter, VM and snapshot
        it names (or `where` names instead)."""
        keys = ("run_id", "task_id", "vcenter", "vm_moref", "snapshot_moref")
        named = {k: getattr(event, k, None) for k in keys}
        return cls(occurred_at=now, step=step, reason=reason, **{**named, **where})


RunState = Literal["succeeded", "warning", "partial", "failed", "cancelled"]
# How a run can end: every VM backed up (with warnings: a quiesce that fell back, a disk skipped),
# some, none, or cancelled. The one list of them: everything else imports it (from shared.contracts).
RUN_FINAL: tuple[str, ...] = ("succeeded", "warning", "partial", "failed", "cancelled")
# How a task (one VM of a run) can end; likewise the one list of them.
TASK_FINAL: tuple[str, ...] = ("succeeded", "failed", "cancelled")


class RunFinished(Event):
    """A run ended (every task or restore test of it has ended): what people are told about.

    Published by: whichever service ended the run's last task. Consumed by: notifier (channels).
    """

    SUBJECT: ClassVar[Subject] = Subject.RUN_FINISHED
    run_id: Id
    job_id: Id
    state: RunState

    def msg_id(self) -> str:
        return f"run.finished:{self.run_id}"
