"""The run's log fields an event does not name: its job and VM, from the catalog.

The bus runner binds what the event names (shared/runtime/bus.py); most events name their run
and task but not the job or the VM (TransferDone, VerifyDone, StepFailed by moref). `serve()`
gives the runner `run_fields`, which reads them (one or two primary-key reads, in a thread), so
every line of a run's work says its job and VM.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.orm import Session, sessionmaker

from shared.contracts import Event
from shared.db.models import Run, Task

log = logging.getLogger(__name__)


def lookup(sessions: sessionmaker[Session], event: Event) -> dict[str, str]:
    """job and vm of the run and task `event` names, where it does not name them itself."""
    run_id: str | None = getattr(event, "run_id", None)
    task_id: str | None = getattr(event, "task_id", None)
    need_job = run_id is not None and not getattr(event, "job_id", None)
    need_vm = task_id is not None and not getattr(event, "vm_name", None)
    if not (need_job or need_vm):
        return {}
    out: dict[str, str] = {}
    with sessions() as s:
        if need_vm:
            task = s.get(Task, task_id)
            if task is not None:
                out["vm"] = task.vm_name
        if need_job:
            run = s.get(Run, run_id)
            if run is not None:
                out["job"] = run.job_id
    return out


async def run_fields(sessions: sessionmaker[Session], event: Event) -> dict[str, str]:
    """`lookup` in a thread; a failure only costs the fields (a log field never fails a handler)."""
    try:
        return await asyncio.to_thread(lookup, sessions, event)
    except Exception as exc:
        log.debug("no run fields for %s: %s", event.SUBJECT.value, exc)
        return {}
