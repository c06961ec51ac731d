"""What operators watch: alerts, dead letters, and the live heartbeats and progress."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from shared.events.payload import Event, Id, Payload
from shared.events.subjects import Subject


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


class DiskProgress(Payload):
    """One disk's part of a TaskProgress: bytes of its plan done and planned."""

    key: int
    label: str
    bytes_done: int
    bytes_total: int


class TaskProgress(Payload):
    """Live: a task's progress, subject `vbm.live.progress.<run_id>`, about once a second; `disks`
    splits it per disk (empty from a mover that does not say)."""

    run_id: str
    task_id: str
    vm_name: str
    phase: str
    bytes_done: int
    bytes_total: int
    rate: float
    sent_at: datetime
    note: str | None = None  # what slows it (waiting for a datastore slot, a slow datastore)
    disks: list[DiskProgress] = Field(default_factory=list)
