"""The event contracts: every NATS subject vbm uses and the payload on it, in one place.

These are public: external systems subscribe to them. Rules (see docs/design.md, "Events"):

* Payloads are JSON objects of the pydantic models below: frozen, unknown fields refused, each
  with a `schema_version`. A change that breaks a reader gets a new version, never a reuse.
* Durable events go to the JetStream stream `VBM_EVENTS` and carry a deterministic
  `Nats-Msg-Id` (`Event.msg_id()`), so a re-publish of the same fact is dropped as a duplicate.
* Live events (heartbeats, progress) are plain NATS messages under `vbm.live.`: best effort,
  never stored, never needed for correctness.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

STREAM_NAME = "VBM_EVENTS"
LIVE_PREFIX = "vbm.live"

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Subject(StrEnum):
    """Durable subjects, all captured by the `VBM_EVENTS` stream."""

    JOB_REQUESTED = "vbm.job.requested"
    SNAPSHOT_READY = "vbm.snapshot.ready"
    TRANSFER_DONE = "vbm.transfer.done"
    VERIFY_REQUESTED = "vbm.verify.requested"
    VERIFY_DONE = "vbm.verify.done"
    RESTORE_REQUESTED = "vbm.restore.requested"
    RESTORE_DONE = "vbm.restore.done"
    REPLICATE_REQUESTED = "vbm.replicate.requested"
    REPLICATE_DONE = "vbm.replicate.done"
    STEP_FAILED = "vbm.step.failed"
    RUN_FINISHED = "vbm.run.finished"
    ALERT_RAISED = "vbm.alert.raised"
    BUS_REJECTED = "vbm.bus.rejected"


STREAM_SUBJECTS: tuple[str, ...] = tuple(s.value for s in Subject)


def heartbeat_subject(service: str) -> str:
    return f"{LIVE_PREFIX}.heartbeat.{service}"


HEARTBEAT_WILDCARD = f"{LIVE_PREFIX}.heartbeat.*"


def progress_subject(run_id: str) -> str:
    return f"{LIVE_PREFIX}.progress.{run_id}"


def cancel_subject(run_id: str) -> str:
    """Any message here asks every worker of the run to stop at once (the database has the flag)."""
    return f"{LIVE_PREFIX}.cancel.{run_id}"


# Any message here makes every running service send a heartbeat at once (the payload is ignored).
PING_SUBJECT = f"{LIVE_PREFIX}.ping"

# Jobs were created, replaced or deleted: the scheduler re-reads them at once (it polls anyway).
JOBS_CHANGED_SUBJECT = f"{LIVE_PREFIX}.jobs.changed"


class Payload(BaseModel):
    """Base of every payload: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1


class Event(Payload):
    """A durable event: one subject, one deterministic message id."""

    SUBJECT: ClassVar[Subject]
    occurred_at: datetime

    def msg_id(self) -> str:
        raise NotImplementedError


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


class RestoreTarget(Payload):
    """Where a restore as a new VM goes. Names as vCenter shows them; empty means the default."""

    vcenter: str
    datacenter: str | None = Field(default=None, description="None: the original VM's, else the only one")
    datastore: str = Field(description="new_vm: where the VM goes; in_place: unused ('')")
    name: str = Field(min_length=1, max_length=80, description="new_vm: the new VM; in_place: the VM")
    folder: str | None = Field(default=None, description="VM folder path in the datacenter")
    resource_pool: str | None = Field(default=None, description="Host, cluster or pool name")
    network: str | None = Field(default=None, description="Every NIC is connected to this network")
    power_on: bool = False


class RestoreRequested(Event):
    """Restore a restore point as a new VM.

    Published by: gateway, CLI. Consumed by: mover (checks, uploads, registers, powers on).
    """

    SUBJECT: ClassVar[Subject] = Subject.RESTORE_REQUESTED
    restore_id: Id
    restore_point_id: Id
    attempt: int = Field(default=1, ge=1)
    action: Literal["start", "migrate", "stop"] = Field(
        default="start", description="instant recovery: migrate to `datastore`, or stop and clean up"
    )
    datastore: str | None = None

    def msg_id(self) -> str:
        return f"restore.requested:{self.restore_id}:{self.action}:{self.attempt}"


class RestoreDone(Event):
    """A restore ended: ok with the new VM, or failed/cancelled with everything it made removed.

    Published by: mover, notifier (watchdog). Consumed by: notifier (alerts on failure).
    """

    SUBJECT: ClassVar[Subject] = Subject.RESTORE_DONE
    restore_id: Id
    restore_point_id: Id
    state: Literal["succeeded", "failed", "cancelled"]
    vm_name: str
    vm_moref: Id | None = None
    error: str | None = None

    def msg_id(self) -> str:
        return f"restore.done:{self.restore_id}"


class ReplicateRequested(Event):
    """Copy a verified restore point to a secondary repository (3-2-1): the chunks it lacks, the
    manifest last, then check it there. `replication_id` is the `replications` row.

    Published by: verifier (after a restore point verifies), notifier (retries). Consumed by: mover.
    """

    SUBJECT: ClassVar[Subject] = Subject.REPLICATE_REQUESTED
    replication_id: Id
    restore_point_id: Id
    attempt: int = Field(default=1, ge=1)

    def msg_id(self) -> str:
        return f"replicate.requested:{self.replication_id}:{self.attempt}"


class ReplicateDone(Event):
    """A replication ended: ok (the restore point is complete on the target) or failed (why).

    Published by: mover. Consumed by: notifier, gateway.
    """

    SUBJECT: ClassVar[Subject] = Subject.REPLICATE_DONE
    replication_id: Id
    restore_point_id: Id
    target: str = Field(description="The secondary repository's location")
    ok: bool
    chunks_sent: int = Field(ge=0)
    bytes_sent: int = Field(ge=0)
    error: str | None = None

    def msg_id(self) -> str:
        return f"replicate.done:{self.replication_id}:{self.chunks_sent}:{int(self.ok)}"


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


RunState = Literal["succeeded", "warning", "partial", "failed", "cancelled"]
# How a run can end: every VM backed up (with warnings: a quiesce that fell back, a disk skipped),
# some, none, or cancelled. The one list of them: everything else imports it from here.
RUN_FINAL: tuple[str, ...] = ("succeeded", "warning", "partial", "failed", "cancelled")


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


class AlertRaised(Event):
    """Something a person must know. Published by: notifier. Consumed by: alert channels."""

    SUBJECT: ClassVar[Subject] = Subject.ALERT_RAISED
    alert_id: Id
    severity: Literal["info", "warning", "error", "critical"]
    kind: str = Field(min_length=1, max_length=64)
    message: str
    vm_name: str | None = None
    run_id: Id | None = None

    def msg_id(self) -> str:
        return f"alert.raised:{self.alert_id}"


class BusRejected(Event):
    """A message the bus runner could not process and removed from redelivery (dead letter).

    Published by: the bus runner of any service. Consumed by: notifier, operators.
    """

    SUBJECT: ClassVar[Subject] = Subject.BUS_REJECTED
    consumer: str
    subject: str
    stream_seq: int = Field(ge=0)
    deliveries: int = Field(ge=0)
    reason: str

    def msg_id(self) -> str:
        return f"bus.rejected:{self.consumer}:{self.stream_seq}"


class ServiceHeartbeat(Payload):
    """Live: a service instance is up. Subject `vbm.live.heartbeat.<service>`, every few seconds."""

    service: str
    instance: str
    pid: int
    host: str
    version: str
    started_at: datetime
    sent_at: datetime
    state: Literal["starting", "ready", "stopping"]


class TaskProgress(Payload):
    """Live: a task's progress, subject `vbm.live.progress.<run_id>`, about once a second."""

    run_id: str
    task_id: str
    vm_name: str
    phase: str
    bytes_done: int
    bytes_total: int
    rate: float
    sent_at: datetime
    note: str | None = None  # what slows it (waiting for a datastore slot, a slow datastore)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.SUBJECT.value: cls
    for cls in (
        JobRequested,
        SnapshotReady,
        TransferDone,
        VerifyRequested,
        VerifyDone,
        RestoreRequested,
        RestoreDone,
        ReplicateRequested,
        ReplicateDone,
        StepFailed,
        RunFinished,
        AlertRaised,
        BusRejected,
    )
}


def event_type_for(subject: str) -> type[Event]:
    """The payload model of a durable subject; KeyError names unknown subjects."""
    try:
        return EVENT_TYPES[subject]
    except KeyError:
        raise KeyError(f"no event contract for subject {subject!r}") from None
