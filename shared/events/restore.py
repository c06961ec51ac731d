"""The events of restores and of copies to secondary repositories (replication)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from shared.events.payload import Event, Id, Payload
from shared.events.subjects import Subject


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
    disk_format: Literal["as_source", "thin", "thick"] = Field(
        default="as_source", description="as_source: each disk as backed up; thin: all thin; thick: all thick"
    )


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
