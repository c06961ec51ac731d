"""The NATS subjects vbm uses: the durable ones of the `VBM_EVENTS` stream and the live ones."""

from __future__ import annotations

from enum import StrEnum

STREAM_NAME = "VBM_EVENTS"
LIVE_PREFIX = "vbm.live"


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


PROGRESS_WILDCARD = f"{LIVE_PREFIX}.progress.*"


def cancel_subject(run_id: str) -> str:
    """Any message here asks every worker of the run to stop at once (the database has the flag)."""
    return f"{LIVE_PREFIX}.cancel.{run_id}"


# Any message here makes every running service send a heartbeat at once (the payload is ignored).
PING_SUBJECT = f"{LIVE_PREFIX}.ping"

# Jobs were created, replaced or deleted: the scheduler re-reads them at once (it polls anyway).
JOBS_CHANGED_SUBJECT = f"{LIVE_PREFIX}.jobs.changed"
