"""Snapshotter handlers: take the backup snapshot of a VM the dispatcher admitted, and remove it
once its data is safe.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from shared.catalog import ledger, marker, runlog
from shared.catalog import tasks as state
from shared.contracts import DiskRef, Event, JobRequested, SkippedDisk, SnapshotReady, TransferDone
from shared.db.models import Job, Run, Task
from shared.pipeline.cleanup import remove_entries, remove_one
from shared.runtime.bus import Delivery, Permanent, Retryable
from shared.runtime.outbox import stage
from shared.runtime.service import Context
from shared.vsphere import DiskInfo, NotFound, SnapshotInfo, VCenter, VMInfo, VSphereError
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)

TOUCH = 10.0  # seconds between marks of life while a snapshot step waits for vCenter
RETRY_CALLS = (2.0, 5.0)  # a busy vCenter is asked again after these waits, within one try


@dataclass
class Deps:
    ctx: Context
    vcenters: VCenters
    kick: Any = field(default=lambda: None)  # wakes the dispatcher
    secret: bytes = b""  # the snapshot marker key (loaded at wiring)


async def on_job_requested(event: JobRequested, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    """A run was asked for: the dispatcher plans it from the database at once."""
    deps.kick()
    return []


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


async def snapshot_task(deps: Deps, run_id: str, task_id: str) -> None:
    """The snapshot step of one admitted VM; a failure ends this try (another may follow). The
    step holds the task's generation from its admission: if another snapshotter took the step
    over meanwhile, this one stops before every step that changes anything."""
    gen = await asyncio.to_thread(_generation, deps.ctx, task_id)
    if gen is None:
        return
    toucher = asyncio.create_task(_touch(deps, task_id))
    try:
        await _snapshot_task(deps, run_id, task_id, gen)
    except state.Stale:
        return
    except Cancelled:
        _end(deps, task_id, gen, "cancelled", "cancelled by request")
    except (Permanent, Retryable, VSphereError) as exc:
        _fail(deps, task_id, gen, str(exc))
    except Exception as exc:  # a bug must not leave the task waiting for its deadline
        log.exception("snapshot step of %s failed", task_id)
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


def _generation(ctx: Context, task_id: str) -> int | None:
    with ctx.sessions() as s:
        task = s.get(Task, task_id)
        if task is None or task.phase != "snapshot" or task.state in state.FINAL:
            return None
        return task.generation


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


async def _call(deps: Deps, vcenter: str, fn: Any) -> Any:
    """A vCenter call; a busy or unreachable vCenter is asked again twice before the try fails."""
    for wait in (*RETRY_CALLS, None):
        try:
            return await deps.vcenters.call(vcenter, fn)
        except Retryable:
            if wait is None:
                raise
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


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
        excluded = _excluded_disks(job, vcenter, moref, task.vm_name)
    name = ledger.snapshot_name(run_id, tries)
    vm = await _check_vm(deps, vcenter, moref, options)

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
            made = await deps.vcenters.call(vcenter, lambda vc: _enable_cbt(vc, vm, cycle, describe(cycle)))
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
    snap, fallback = await _create(deps, task_id, gen, vcenter, vm, name, describe(name), options)
    if not await asyncio.to_thread(_mine, ctx, task_id, gen):
        await _abandon(deps, task_id, name, vcenter, moref, snap.moref)
        return
    disks = await _call(deps, vcenter, lambda vc: vc.snapshot_disks(snap.moref))
    taken, skipped = _split(disks, excluded)
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


EXCLUDED = "excluded by the job"  # as shared/vsphere/selection.py says it


def _excluded_disks(job: Job, vcenter: str, moref: str, name: str) -> set[int]:
    """Disk keys the job excludes for this VM (`exclude.disks`, naming it by moref or name)."""
    out: set[int] = set()
    for rule in ((job.selection or {}).get("exclude") or {}).get("disks") or []:
        vm = rule.get("vm") or {}
        same = vm.get("moref") == moref or (not vm.get("moref") and vm.get("name") == name)
        if same and (vm.get("vcenter") or job.vcenter) == vcenter:
            out.update(int(k) for k in rule.get("keys") or [])
    return out


def _split(disks: list[DiskInfo], excluded: set[int]) -> tuple[list[DiskInfo], list[SkippedDisk]]:
    taken, skipped = [], []
    for d in disks:
        why = EXCLUDED if d.key in excluded else d.unreadable
        if why:
            skipped.append(SkippedDisk(key=d.key, label=d.label, reason=why))
        else:
            taken.append(d)
    return taken, skipped


async def _check_vm(deps: Deps, vcenter: str, moref: str, options: dict[str, Any]) -> VMInfo:
    try:
        vm: VMInfo = await _call(deps, vcenter, lambda vc: vc.vm(moref))
    except Permanent as exc:
        if isinstance(exc.__cause__, NotFound):
            raise Permanent(f"VM {moref} does not exist on vCenter {vcenter} (removed?)") from None
        raise
    foreign = [
        s for s in vm.snapshots if not marker.is_vbms(deps.secret, vcenter, moref, s.name, s.description)
    ]
    if foreign:
        names = ", ".join(repr(s.name) for s in foreign[:5])
        raise Permanent(
            f"VM {vm.name} has {len(foreign)} snapshot(s) not made by vbm ({names}): a backup would"
            " read a snapshot chain, not the disks. Delete or consolidate them in vCenter"
            " (Snapshots > Delete All), then run the job again."
        )
    minimum = float(options.get("min_free_percent", 5.0))
    space = await _call(deps, vcenter, lambda vc: vc.datastore_free(vm.datastores))
    for ds, (capacity, free) in space.items():
        if capacity and 100.0 * free / capacity < minimum:
            raise Permanent(
                f"datastore {ds} of VM {vm.name} has {100.0 * free / capacity:.1f}% free, below"
                f" the job's minimum of {minimum:.0f}%: a snapshot could fill it. Free space first."
            )
    return vm


class StunCycleLeft(Exception):
    """The stun cycle's snapshot was made and could not be removed (the cause says why)."""


def _enable_cbt(vc: VCenter, vm: VMInfo, name: str, description: str) -> bool:
    """Turn CBT on. Like vSphere, it takes effect after a stun cycle: a snapshot create+remove.
    True if the cycle was done (it cannot be on a powered-off VM or one with snapshots)."""
    vc.set_cbt(vm.moref, True)
    if vm.power_state == "poweredOn" and not vm.snapshots:
        cycle = vc.create_snapshot(vm.moref, name, description=description)
        try:
            vc.remove_snapshot(cycle.moref)
        except VSphereError as exc:
            raise StunCycleLeft() from exc
        return True
    return False


async def _create(
    deps: Deps,
    task_id: str,
    gen: int,
    vcenter: str,
    vm: VMInfo,
    name: str,
    description: str,
    options: dict[str, Any],
) -> tuple[SnapshotInfo, str | None]:
    """The snapshot, and why quiescing failed when it fell back to a crash-consistent one. A
    create is asked again within the try only when vCenter said its task failed (a busy host, a
    transient fault): after a timeout or a lost answer vCenter may still be making it, so the try
    fails rather than ask again (the sweeper finds a late one by its name; the next try has its
    own name)."""
    existing = [s for s in vm.snapshots if s.name == name]
    if existing:  # an earlier attempt's create completed after all
        return existing[0], None
    quiesce = bool(options.get("quiesce", False))
    timeout = deps.ctx.settings.pipeline.snapshot_timeout
    fell_back: list[str] = []

    def create(vc: VCenter) -> SnapshotInfo:
        try:
            return vc.create_snapshot(
                vm.moref, name, description=description, quiesce=quiesce, timeout=timeout
            )
        except VSphereError as exc:
            if quiesce and options.get("quiesce_fallback", True) and not exc.retryable:
                log.warning("quiesced snapshot of %s failed (%s): crash-consistent instead", vm.name, exc)
                fell_back.append(str(exc))
                return vc.create_snapshot(vm.moref, name, description=description, timeout=timeout)
            raise

    for wait in (*RETRY_CALLS, None):
        try:
            snap: SnapshotInfo = await deps.vcenters.call(vcenter, create)
            return snap, (fell_back[0] if fell_back else None)
        except Retryable as exc:
            cause = exc.__cause__
            if wait is None or not (isinstance(cause, VSphereError) and cause.settled):
                raise
            log.info("snapshot of %s failed (%s): asking again in %.0f s", vm.name, exc, wait)
            await asyncio.sleep(wait)
            await _check_mine(deps, task_id, gen)
    raise AssertionError("unreachable")


async def _abandon(deps: Deps, task_id: str, name: str, vcenter: str, moref: str, made: str) -> None:
    """The step ended or was taken over while this snapshot was being made. If the task's
    transfer reads this very snapshot (the winner found it by name), it stays. If the task has
    moved on with another one, only this one goes, by its moref (the name is shared). Else (the
    task ended, or waits for another try) it is open again in the ledger and removed by name,
    even if a sweep closed its entry before the create completed."""
    ctx = deps.ctx
    with ctx.sessions.begin() as s:
        task = s.get(Task, task_id)
        in_use = task.snapshot_moref if task is not None and task.state not in state.FINAL else None
        if in_use == made:
            return
        if in_use is None:
            entry = ledger.get(s, name, vcenter, moref)
            if entry is not None:
                entry.state, entry.snapshot_moref, entry.removed_at = "created", made, None
    if in_use is None:
        await remove_one(ctx, deps.vcenters, name, vcenter, moref)
        return
    timeout = ctx.settings.pipeline.snapshot_timeout
    try:  # if this fails, the winner's clean-up after its transfer removes every snapshot of the name
        await deps.vcenters.call(vcenter, lambda vc: vc.remove_snapshot(made, timeout=timeout))
    except (Permanent, Retryable) as exc:
        log.warning("task %s: removing the extra snapshot %s failed: %s", task_id, made, exc)


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
