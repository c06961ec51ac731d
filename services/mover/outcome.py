"""How a transfer ends in the catalog, each in one transaction: the restore point recorded and the
task moved to verify (`vbm.transfer.done`), or the task ended (`vbm.step.failed`)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.mover.deps import Deps
from shared.catalog import tasks as state
from shared.catalog.points import record_restore_point
from shared.contracts import SnapshotReady, StepFailed, TransferDone
from shared.db.models import Job, Run, Task
from shared.observe import metrics
from shared.observe.oncommit import after_commit
from shared.repo import RestorePoint, WriteStats
from shared.runtime.outbox import stage

log = logging.getLogger(__name__)


def record(
    deps: Deps,
    event: SnapshotReady,
    rp: RestorePoint,
    repository: str,
    stats: WriteStats,
    done: int,
    rate: float = 0.0,
    sha256: dict[str, Any] | None = None,
) -> None:
    """In one transaction: the catalog row (`shared/catalog/points.py`), the task's move to verify,
    `vbm.transfer.done`."""
    ctx = deps.ctx
    kind = "incremental" if rp.parent else "full"
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        record_restore_point(
            s,
            rp,
            task_id=event.task_id,
            run_id=event.run_id,
            vcenter=event.vcenter,
            vm_moref=event.vm_moref,
            vm_name=event.vm_name,
            repository=repository,
            bytes_read=stats.bytes_read,
            bytes_stored=stats.bytes_stored,
            sha256=sha256,
        )
        state.move(
            s,
            event.task_id,
            expect="transfer",
            now=now,
            phase="verify",
            restore_point_id=rp.id,
            kind=kind,
            bytes_done=done,
            bytes_total=done,
            rate=rate,
            bytes_read=stats.bytes_read,
            bytes_stored=stats.bytes_stored,
            deadline_at=now + timedelta(seconds=ctx.settings.pipeline.verify_timeout),
        )
        _count(s, event, rp, repository, stats, kind)
        stage(
            s,
            TransferDone(
                occurred_at=now,
                run_id=event.run_id,
                task_id=event.task_id,
                restore_point_id=rp.id,
                bytes_read=stats.bytes_read,
                bytes_stored=stats.bytes_stored,
                attempt=event.attempt,
            ),
            now,
        )
    ctx.relay.kick()
    log.info(
        "%s: %s restore point %s, read %d bytes, stored %d",
        event.vm_name,
        kind,
        rp.id,
        stats.bytes_read,
        stats.bytes_stored,
    )


def _count(
    s: Session, event: SnapshotReady, rp: RestorePoint, repository: str, stats: WriteStats, kind: str
) -> None:
    """The backup's duration and the bytes it moved, once its restore point is recorded."""
    run = s.get(Run, event.run_id)
    job = s.get(Job, run.job_id) if run is not None else None
    seconds = max((rp.finished - rp.started).total_seconds(), 0.0)
    labels = {
        "job": job.name if job else "",
        "vm": event.vm_name,
        "vcenter": event.vcenter,
        "repository": repository,
    }

    def count() -> None:
        metrics.BACKUP_DURATION.labels(**labels).observe(seconds)
        moved = metrics.TRANSFER_BYTES.labels(
            vcenter=event.vcenter, repository=repository, kind=kind, stage="transferred"
        )
        moved.inc(stats.bytes_read)
        metrics.TRANSFER_BYTES.labels(
            vcenter=event.vcenter, repository=repository, kind=kind, stage="stored"
        ).inc(stats.bytes_stored)

    after_commit(s, count)


def end(deps: Deps, event: SnapshotReady, how: str, reason: str) -> None:
    ctx = deps.ctx
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        task = s.get(Task, event.task_id)
        if task is not None:
            state.end_task(s, task, how, now, reason)
        stage(
            s,
            StepFailed.of(event, "transfer", reason, now),
            now,
        )
    ctx.relay.kick()
