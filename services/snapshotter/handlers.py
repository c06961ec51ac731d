"""The snapshotter's bus handlers: a run asked for wakes the dispatcher (which plans it from the
database); a transfer done removes its snapshot. The snapshot step itself is `step.py`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.catalog import ledger
from shared.catalog import tasks as state
from shared.contracts import Event, JobRequested, TransferDone
from shared.db.models import Run, Task
from shared.observe import tracing
from shared.pipeline.cleanup import remove_entries
from shared.runtime.bus import Delivery
from shared.runtime.service import Context
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)


@dataclass
class Deps:
    ctx: Context
    vcenters: VCenters
    kick: Any = field(default=lambda: None)  # wakes the dispatcher
    secret: bytes = b""  # the snapshot marker key (loaded at wiring)


async def on_job_requested(event: JobRequested, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    """A run was asked for: the dispatcher plans it from the database at once."""
    carrier = tracing.carrier()  # empty when traces are off
    if carrier:
        await asyncio.to_thread(_adopt_trace, deps.ctx, event.run_id, carrier)
    deps.kick()
    return []


def _adopt_trace(ctx: Context, run_id: str, carrier: dict[str, str]) -> None:
    """A run asked for outside any trace (`vbm job run`) gets this handler's: the snapshot step,
    started by the dispatcher, joins it (docs/design.md, "Traces")."""
    with ctx.sessions.begin() as s:
        run = s.get(Run, run_id)
        if run is not None and not run.trace_context:
            run.trace_context = carrier


async def on_transfer_done(event: TransferDone, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    """The data is safe in the repository: remove the snapshot now, before verification. (A late
    TransferDone of an earlier try leaves the snapshot of the try in progress alone.)"""
    with deps.ctx.sessions() as s:
        task = s.get(Task, event.task_id)
        busy = task is not None and task.phase in ("snapshot", "transfer") and task.state not in state.FINAL
        keep = ledger.snapshot_name(task.run_id, task.tries) if busy and task is not None else None
    await remove_entries(deps.ctx, deps.vcenters, task_id=event.task_id, keep=keep)
    deps.kick()  # a stream and a snapshot slot are free
    return []
