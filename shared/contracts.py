"""The event contracts: every NATS subject vbm uses and the payload on it, in one place.

These are public: external systems subscribe to them. Rules (see docs/design.md, "Events"):

* Payloads are JSON objects of pydantic models: frozen, unknown fields refused, each with a
  `schema_version`. A change that breaks a reader gets a new version, never a reuse.
* Durable events go to the JetStream stream `VBM_EVENTS` and carry a deterministic
  `Nats-Msg-Id` (`Event.msg_id()`), so a re-publish of the same fact is dropped as a duplicate.
* Live events (heartbeats, progress) are plain NATS messages under `vbm.live.`: best effort,
  never stored, never needed for correctness.

The models live in `shared/events/` by role (subjects, the payload base, backup, restore, ops);
import them from here.
"""

from __future__ import annotations

from shared.events.backup import (
    RUN_FINAL,
    TASK_FINAL,
    DiskRef,
    JobRequested,
    RunFinished,
    RunState,
    SkippedDisk,
    SnapshotReady,
    Step,
    StepFailed,
    TransferDone,
    VerifyDone,
    VerifyRequested,
)
from shared.events.ops import (
    AlertRaised,
    BusRejected,
    DiskProgress,
    ServiceHeartbeat,
    TaskProgress,
)
from shared.events.payload import (
    Event,
    Id,
    Payload,
)
from shared.events.restore import (
    ReplicateDone,
    ReplicateRequested,
    RestoreDone,
    RestoreRequested,
    RestoreTarget,
)
from shared.events.subjects import (
    HEARTBEAT_WILDCARD,
    JOBS_CHANGED_SUBJECT,
    LIVE_PREFIX,
    PING_SUBJECT,
    PROGRESS_WILDCARD,
    STREAM_NAME,
    STREAM_SUBJECTS,
    Subject,
    cancel_subject,
    heartbeat_subject,
    progress_subject,
)

__all__ = [
    "EVENT_TYPES",
    "HEARTBEAT_WILDCARD",
    "JOBS_CHANGED_SUBJECT",
    "LIVE_PREFIX",
    "PING_SUBJECT",
    "PROGRESS_WILDCARD",
    "RUN_FINAL",
    "STREAM_NAME",
    "STREAM_SUBJECTS",
    "TASK_FINAL",
    "AlertRaised",
    "BusRejected",
    "DiskProgress",
    "DiskRef",
    "Event",
    "Id",
    "JobRequested",
    "Payload",
    "ReplicateDone",
    "ReplicateRequested",
    "RestoreDone",
    "RestoreRequested",
    "RestoreTarget",
    "RunFinished",
    "RunState",
    "ServiceHeartbeat",
    "SkippedDisk",
    "SnapshotReady",
    "Step",
    "StepFailed",
    "Subject",
    "TaskProgress",
    "TransferDone",
    "VerifyDone",
    "VerifyRequested",
    "cancel_subject",
    "event_type_for",
    "heartbeat_subject",
    "progress_subject",
]

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
