"""The snapshot step: take the backup snapshot of a VM the dispatcher admitted (it is removed
once its data is safe: `handlers.on_transfer_done`).

For each admitted VM: check it (exists, no snapshots but vbm's, datastore space), turn CBT on if
the job wants it, write the snapshot into the ledger, then ask vCenter for it, marked as vbm's
(`shared/catalog/marker.py`). A create that times out may complete later: the next try (or
the ledger sweeper) finds it by its name. Disks a snapshot cannot hold (independent disks, raw
device mappings) and disks the job excludes are left out and named.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from functools import partial

from services.snapshotter.handlers import Deps
from services.snapshotter.snapshots import (
    EXCLUDED,
    StunCycleLeft,
    abandon,
    call,
    check_vm,
    create,
    enable_cbt,
    excluded_disks,
    split_disks,
)
from shared.catalog import ledger, marker, runlog
from shared.catalog import tasks as state
from shared.contracts import DiskRef, SnapshotReady
from shared.db.models import Job, Run, Task
from shared.observe import logs, tracing
from shared.runtime.bus import Permanent, Retryable
from shared.runtime.outbox import stage
from shared.runtime.service import Context
from shared.vsphere import VSphereError

log = logging.getLogger(__name__)

TOUCH = 10.0  # seconds between marks of life while a snapshot step waits for vCenter


async def snapshot_task(deps: Deps, run_id: str, task_id: str) -> None:
    """The snapshot step of one admitted VM; a failure ends this try (another may follow). The
    step holds the task's generation from its admission: if another snapshotter took the step
    over meanwhile, this one stops before every step that changes anything."""
    found = await asyncio.to_thread(_generation, deps.ctx, task_id)
    if found is None:
        return
    gen, vm, job_id, trace = found
    # started by the dispatcher, not by a message: the span joins the run's trace by its stored context
    with (
        tracing.span("snapshot", parent=trace, run_id=run_id, vm=vm),
        logs.bound(run_id=run_id, job=job_id, vm=vm),
    ):
        await _snapshot_step(deps, run_id, task_id, gen)


async def _snapshot_step(deps: Deps, run_id: str, task_id: str, gen: int) -> None:
    toucher = asyncio.create_task(_touch(deps, task_id))
    try:
        await _snapshot_task(deps, run_id, task_id, gen)
    except state.Stale:
        return
    except Cancelled:
        _end(deps, task_id, gen, "cancelled", "cancelled by request")
    except (Permanent, Retryable, VSphereError) as exc:
        tracing.failed(exc)
        _fail(deps, task_id, gen, str(exc))
    except Exception as exc:  # a bug must not leave the task waiting for its deadline
        log.exception("snapshot step of %s failed", task_id)
        tracing.failed(exc)
        _fail(deps, task_id, gen, f"{type(exc).__name__}: {exc}")
    finally:
        toucher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await toucher


async def _touch(deps: Deps, task_id: str) -> None:
    """Marks of life: a snapshot step waiting on vCenter is not taken over by another."""
    ctx = deps.ctx
    while True:
        await asyncio.sleep(TOUCH)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(_touch_once, ctx, task_id)


class Cancelled(Exception):
    pass


def _generation(ctx: Context, task_id: str) -> tuple[int, str, str, dict[str, str] | None] | None:
    """The task's generation, VM name, job and its run's trace context; None if not to snapshot."""
    with ctx.sessions() as s:
        task = s.get(Task, task_id)
        if task is None or task.phase != "snapshot" or task.state in state.FINAL:
            return None
        run = s.get(Run, task.run_id)
        trace = run.trace_context if run is not None else None
        return task.generation, task.vm_name, run.job_id if run is not None else "", trace


def _mine(ctx: Context, task_id: str, gen: int) -> bool:
    """Whether the snapshot step is still this one's: not ended, not taken over."""
    with ctx.sessions() as s:
        task = s.get(Task, task_id)
        return (
            task is not None
            and task.phase == "snapshot"
            and task.state not in state.FINAL
            and task.generation == gen
        )


async def _check_mine(deps: Deps, task_id: str, gen: int) -> None:
    if not await asyncio.to_thread(_mine, deps.ctx, task_id, gen):
        raise state.Stale(f"task {task_id}: its snapshot step ended or was taken over")


def _touch_once(ctx: Context, task_id: str) -> None:
    with ctx.sessions.begin() as s:
        task = s.get(Task, task_id)
        if task is not None and task.phase == "snapshot" and task.state not in state.FINAL:
            task.updated_at = ctx.clock()


async def _snapshot_task(deps: Deps, run_id: str, task_id: str, gen: int) -> None:
    ctx = deps.ctx
    with ctx.sessions() as s:
        task = s.get(Task, task_id)
        run = s.get(Run, run_id)
        if task is None or run is None or task.phase != "snapshot" or task.state in state.FINAL:
            return
        job = s.get(Job, run.job_id)
        if job is None:
            raise Permanent(f"job {run.job_id} of run {run_id} no longer exists")
        if run.cancel_requested:
            raise Cancelled()
        vcenter, moref, options, tries = task.vcenter, task.vm_moref, dict(job.options), task.tries
        excluded = excluded_disks(job, vcenter, moref, task.vm_name)
    name = ledger.snapshot_name(run_id, tries)
    vm = await check_vm(deps, vcenter, moref, options)

    def intend(snapshot: str) -> None:
        """Write the snapshot into the ledger before asking vCenter for it."""
        with ctx.sessions.begin() as s:
            ledger.record_intent(
                s, name=snapshot, vcenter=vcenter, vm_moref=moref, vm_name=vm.name, run_id=run_id,
                task_id=task_id, now=ctx.clock(),
            )  # fmt: skip

    def describe(snapshot: str) -> str:
        return marker.description(deps.secret, vcenter, moref, snapshot, run_id)

    cbt_trouble = None
    if options.get("cbt", True) and not vm.cbt_enabled:
        # The stun cycle's snapshot is in the ledger too: if its removal fails (or we die), its
        # entry stays open and the sweeper removes it.
        cycle = f"{name}-cbt"
        await _check_mine(deps, task_id, gen)
        intend(cycle)
        try:
            made = await deps.vcenters.call(vcenter, lambda vc: enable_cbt(vc, vm, cycle, describe(cycle)))
        except StunCycleLeft as exc:  # a backup snapshot on top of it would read a chain: not now
            raise Permanent(
                f"the snapshot of CBT's stun cycle could not be removed ({exc.__cause__}); it is removed"
                " before the VM is tried again"
            ) from None
        except (Permanent, Retryable) as exc:  # no CBT this time: the backup reads every disk whole
            cbt_trouble = f"Changed Block Tracking could not be turned on ({exc}): this backup is a full"
        else:
            with ctx.sessions.begin() as s:
                entry = ledger.get(s, cycle, vcenter, moref)
                assert entry is not None
                entry.state, entry.removed_at = "removed" if made else "gone", ctx.clock()
                note = f"{vm.name}: Changed Block Tracking turned on"
                runlog.write(s, run_id, note, ctx.clock(), task_id=task_id)
    await _check_mine(deps, task_id, gen)
    intend(name)
    fence = partial(_check_mine, deps, task_id, gen)
    snap, fallback = await create(deps, fence, vcenter, vm, name, describe(name), options)
    if not await asyncio.to_thread(_mine, ctx, task_id, gen):
        await abandon(deps, task_id, name, vcenter, moref, snap.moref)
        return
    disks = await call(deps, vcenter, lambda vc: vc.snapshot_disks(snap.moref))
    taken, skipped = split_disks(disks, excluded)
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        entry = ledger.get(s, name, vcenter, moref)
        assert entry is not None
        entry.state, entry.snapshot_moref, entry.created_at = "created", snap.moref, now
        task = s.get(Task, task_id)
        assert task is not None
        if fallback:
            state.warn(s, task, f"quiescing failed ({fallback}): the snapshot is crash-consistent", now)
        if cbt_trouble:
            state.warn(s, task, cbt_trouble, now)
        for disk in skipped:
            if disk.reason != EXCLUDED:
                state.warn(s, task, f"disk {disk.key} ({disk.label}) not backed up: {disk.reason}", now)
        state.move(
            s, task_id, expect="snapshot", now=now, generation=gen, phase="transfer",
            snapshot_moref=snap.moref, bytes_total=sum(d.capacity for d in taken),
            deadline_at=now + timedelta(seconds=ctx.settings.pipeline.transfer_stall),
        )  # fmt: skip
        runlog.write(s, run_id, f"{vm.name}: snapshot {name} created ({snap.moref})", now, task_id=task_id)
        stage(
            s,
            SnapshotReady(
                occurred_at=now, run_id=run_id, task_id=task_id, vcenter=vcenter, datacenter=vm.datacenter,
                vm_moref=moref, vm_name=vm.name, vmx_path=vm.vmx_path, snapshot_moref=snap.moref,
                snapshot_name=name,
                disks=tuple(
                    DiskRef(
                        key=d.key, capacity_bytes=d.capacity, datastore_path=d.file, change_id=d.change_id
                    )
                    for d in taken
                ),
                skipped=tuple(skipped),
            ),
            now,
        )  # fmt: skip
    ctx.relay.kick()


def _end(deps: Deps, task_id: str, gen: int, how: str, reason: str) -> None:
    ctx = deps.ctx
    with ctx.sessions.begin() as s:
        task = s.get(Task, task_id)
        if task is not None and task.generation == gen:
            state.end_task(s, task, how, ctx.clock(), reason)
    ctx.relay.kick()
    deps.kick()


def _fail(deps: Deps, task_id: str, gen: int, reason: str) -> None:
    ctx = deps.ctx
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        task = s.get(Task, task_id)
        if task is None or task.state in state.FINAL or task.generation != gen:
            return  # ended, or another snapshotter took the step over: its outcome, not this
        run = s.get(Run, task.run_id)
        job = s.get(Job, run.job_id) if run is not None else None
        policy = state.RetryPolicy.of(ctx.settings, job)
        state.fail_task(s, task, step="snapshot", reason=reason, now=now, policy=policy)
    ctx.relay.kick()
    deps.kick()
