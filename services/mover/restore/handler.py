"""The mover's restore handler: a restore request starts an attempt in its mode (new VM, in place,
test, instant), reports its progress, cleans up what a failed or cancelled attempt made, and ends
the restore (`shared/catalog/restore_end.py`); instant actions go to `instant.py`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta

from services.mover.deps import Deps
from services.mover.restore.common import (
    VC,
    VCENTER_ERRORS,
    Attempt,
    RestoreFailed,
    Superseded,
    clean_up,
    created_of,
)
from services.mover.restore.in_place import restore_in_place
from services.mover.restore.instant import instant_action, restore_instant
from services.mover.restore.new_vm import restore_new_vm
from services.mover.restore.test import restore_test
from shared.catalog.restore_end import Outcome, end_restore
from shared.catalog.restores import FINAL
from shared.clock import aware
from shared.contracts import Event, RestoreRequested, RestoreTarget
from shared.db.models import Restore
from shared.repo import RepoError
from shared.runtime.bus import Delivery, Permanent, Retryable
from shared.vsphere import VSphereError
from shared.vsphere.datastore import DownloadError

log = logging.getLogger(__name__)


async def on_restore_requested(event: RestoreRequested, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    if event.action != "start":
        return await instant_action(event, deps)
    ctx = deps.ctx
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        row = s.get(Restore, event.restore_id)
        if row is None or row.state in FINAL:
            return []
        alive = timedelta(seconds=ctx.settings.pipeline.ack_wait / 2)
        if row.state == "running" and aware(row.updated_at) > now - alive:
            # another attempt updates the row every second: this is a duplicate or re-sent
            # request. The bus redelivers a request only `ack_wait` after its mover went quiet,
            # so a redelivery after a crash finds the row quiet for longer, and takes over.
            return []
        if row.cancel_requested and not row.created:  # cancelled before it started: nothing to undo
            end_restore(s, row, "cancelled", "cancelled before it started", now)
            ctx.relay.kick()
            return []
        leftovers = dict(row.created)
        row.generation += 1
        row.state, row.phase = "running", "checking"
        row.started_at = row.started_at or now
        row.updated_at = now
        row.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.transfer_stall)
        generation, total = row.generation, row.bytes_total
        target = RestoreTarget.model_validate(
            {k: v for k, v in row.target.items() if k in RestoreTarget.model_fields}
        )
        rp_id, location, mode = row.restore_point_id, row.repository, row.mode
        original = str(row.target.get("vm_moref", ""))
        method = str(row.target.get("method", "full"))
    attempt = Attempt(deps, event.restore_id, generation, total)
    vc = VC(deps.vcenters, target.vcenter)
    if leftovers:  # an earlier attempt died mid-way: remove what it made, then start over
        log.info("restore %s: removing the leftovers of an earlier attempt: %s", event.restore_id, leftovers)
        await clean_up(vc, leftovers)
        with contextlib.suppress(Superseded):
            await asyncio.to_thread(attempt.update, created={})
    if mode == "in_place":
        work = asyncio.create_task(restore_in_place(attempt, vc, target, rp_id, location, original, method))
    elif mode == "test":
        work = asyncio.create_task(restore_test(attempt, vc, target, rp_id, location))
    elif mode == "instant":
        work = asyncio.create_task(restore_instant(attempt, vc, target, rp_id, location))
    else:
        work = asyncio.create_task(restore_new_vm(attempt, vc, target, rp_id, location))
    reporter = asyncio.create_task(attempt.report())
    stop = asyncio.create_task(attempt.cancelled.wait())
    try:
        await asyncio.wait((work, stop, reporter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (stop, reporter, work):
            t.cancel()
        await asyncio.gather(stop, reporter, work, return_exceptions=True)
        await attempt.repos.aclose()
    reporter_error = reporter.exception() if reporter.done() and not reporter.cancelled() else None
    if isinstance(reporter_error, Superseded):
        log.warning(
            "restore %s: superseded (attempt %d); leaving it to the newer owner", event.restore_id, generation
        )
        return []
    error: str | None = None
    state: Outcome = "succeeded"
    vm_moref: str | None = None
    if reporter_error is not None and not (work.done() and not work.cancelled() and work.exception() is None):
        state, error = "failed", f"progress could not be recorded: {reporter_error}"
    elif attempt.cancelled.is_set() and not (
        work.done() and not work.cancelled() and work.exception() is None
    ):
        state, error = "cancelled", "cancelled by request"
    elif work.cancelled():
        state, error = "cancelled", "cancelled"
    elif (exc := work.exception()) is not None:
        if isinstance(exc, Superseded):
            return []
        state, error = "failed", _reason(exc)
    else:
        vm_moref = work.result()
    if state != "succeeded":
        with contextlib.suppress(Superseded):
            await asyncio.to_thread(attempt.update, phase="cleaning_up")
        created = created_of(attempt)
        try:
            await clean_up(vc, created)
        except (VSphereError, *VCENTER_ERRORS) as exc:
            error = f"{error}; and cleaning up failed: {exc} (remove {created} by hand)"
    if mode == "in_place" and state != "succeeded" and error and "partly overwritten" not in error:
        error += (
            f"; VM {target.name}'s disks may be partly overwritten and it may be left powered off"
            " (and CBT off): run the in-place restore again, or restore as a new VM"
        )
    return _end(attempt, state, error, vm_moref, instant=mode == "instant")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RestoreFailed | VSphereError | DownloadError | RepoError | Retryable | Permanent):
        return str(exc)
    log.error("restore failed unexpectedly", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def _end(
    attempt: Attempt,
    outcome: Outcome,
    error: str | None,
    vm_moref: str | None = None,
    *,
    instant: bool = False,
) -> Sequence[Event]:
    """End the restore if this attempt still owns it (a running instant VM keeps `created`)."""
    ctx = attempt.deps.ctx
    with ctx.sessions.begin() as s:
        row = s.get(Restore, attempt.restore_id)
        if row is None or row.generation != attempt.generation or row.state in FINAL:
            return []
        done = attempt.done if outcome != "succeeded" else row.bytes_total
        running = instant and outcome == "succeeded"
        end_restore(s, row, outcome, error, ctx.clock(), vm_moref=vm_moref, bytes_done=done, running=running)
    ctx.relay.kick()
    log.info("restore %s %s%s", attempt.restore_id, outcome, f": {error}" if error else "")
    return []
