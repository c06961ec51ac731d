"""Snapshotter handlers: take the backup snapshot of each VM of a run, and remove it after.

For each VM: check it (exists, no user snapshots, datastore space), turn CBT on if the job wants
it, write the snapshot into the ledger, then ask vCenter for it. A create that times out may
complete later: the next attempt (or the ledger sweeper) finds it by its name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from shared.bus import Delivery, Permanent, Retryable
from shared.contracts import DiskRef, Event, JobRequested, SnapshotReady, TransferDone
from shared.db.models import Job, Run, SnapshotLedger, Task
from shared.outbox import stage
from shared.pipeline import ledger, state
from shared.pipeline.vcenters import VCenters
from shared.runtime import Context
from shared.vsphere import NotFound, SnapshotInfo, VCenter, VMInfo, VSphereError

log = logging.getLogger(__name__)


@dataclass
class Deps:
    ctx: Context
    vcenters: VCenters


def _sync(deps: Deps) -> None:
    deps.ctx.relay.kick()


async def on_job_requested(event: JobRequested, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    ctx = deps.ctx
    tasks = await _start_run(deps, event)
    for task_id in tasks:
        if ctx.stop.is_set():
            raise Retryable("stopping: the rest of the run is redelivered")
        try:
            await _snapshot_task(deps, event.run_id, task_id)
        except state.Stale:
            continue
        except Permanent as exc:
            _fail(deps, task_id, str(exc))
        except Retryable as exc:
            if not delivery.last_attempt:
                raise
            # The runner's give-up only fails the run: end the task here, so its snapshot
            # intent is swept and the run ends with the reason.
            _fail(deps, task_id, f"gave up after {delivery.attempt} attempts: {exc}")
    return []


async def _start_run(deps: Deps, event: JobRequested) -> list[str]:
    ctx = deps.ctx
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        run = s.get(Run, event.run_id)
        if run is None:
            raise Permanent(f"run {event.run_id} is not in the database")
        job = s.get(Job, run.job_id)
        if job is None:
            raise Permanent(f"job {run.job_id} of run {run.id} no longer exists")
        if run.state in ("succeeded", "failed", "partial", "cancelled"):
            return []
        if (job.options or {}).get("restore_test"):
            return []  # a restore-test job: its runs are restores (shared/restores.py), no snapshots
        if run.state == "queued":
            run.state, run.started_at = "running", now
        for vm in job.vms:
            moref = vm.get("moref") or ""
            if not moref:
                raise Permanent(f"job {job.name}: VM {vm.get('name')} has no moref")
            tid = state.task_id_for(run.id, moref)
            if s.get(Task, tid) is None:
                s.add(
                    Task(
                        id=tid,
                        run_id=run.id,
                        vcenter=job.vcenter,
                        vm_moref=moref,
                        vm_name=vm.get("name") or moref,
                        phase="snapshot",
                        state="running",
                        created_at=now,
                        updated_at=now,
                        deadline_at=now + _secs(ctx.settings.pipeline.snapshot_timeout),
                    )
                )
        s.flush()
        rows = s.scalars(select(Task).where(Task.run_id == run.id, Task.phase == "snapshot"))
        return [t.id for t in rows if t.state not in state.FINAL]


def _secs(n: float) -> timedelta:
    return timedelta(seconds=n)


async def _snapshot_task(deps: Deps, run_id: str, task_id: str) -> None:
    ctx = deps.ctx
    with ctx.sessions() as s:
        task = s.get(Task, task_id)
        run = s.get(Run, run_id)
        assert task is not None and run is not None
        job = s.get(Job, run.job_id)
        assert job is not None
        if run.cancel_requested:
            raise Permanent("cancelled before the snapshot")
        vcenter, moref, options = task.vcenter, task.vm_moref, dict(job.options)
    name = ledger.snapshot_name(run_id)
    vm = await _check_vm(deps, vcenter, moref, name, options)

    def intend(snapshot: str) -> None:
        """Write the snapshot into the ledger before asking vCenter for it."""
        with ctx.sessions.begin() as s:
            ledger.record_intent(
                s,
                name=snapshot,
                vcenter=vcenter,
                vm_moref=moref,
                vm_name=vm.name,
                run_id=run_id,
                task_id=task_id,
                now=ctx.clock(),
            )

    if options.get("cbt", True) and not vm.cbt_enabled:
        # The stun cycle's snapshot is in the ledger too: if its removal fails (or we die), it is
        # removed with the backup snapshot (the sweeper, after the task).
        cycle = f"{name}-cbt"
        intend(cycle)
        made = await deps.vcenters.call(vcenter, lambda vc: _enable_cbt(vc, vm, cycle))
        with ctx.sessions.begin() as s:
            entry = s.get(SnapshotLedger, (cycle, moref))
            assert entry is not None
            entry.state, entry.removed_at = "removed" if made else "gone", ctx.clock()
    intend(name)
    snap = await _create(deps, vcenter, vm, name, options)
    disks = await deps.vcenters.call(vcenter, lambda vc: vc.snapshot_disks(snap.moref))
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        entry = s.get(SnapshotLedger, (name, moref))
        assert entry is not None
        entry.state, entry.snapshot_moref, entry.created_at = "created", snap.moref, now
        state.move(
            s,
            task_id,
            expect="snapshot",
            now=now,
            phase="transfer",
            snapshot_moref=snap.moref,
            bytes_total=sum(d.capacity for d in disks),
            deadline_at=now + _secs(ctx.settings.pipeline.transfer_stall),
        )
        stage(
            s,
            SnapshotReady(
                occurred_at=now,
                run_id=run_id,
                task_id=task_id,
                vcenter=vcenter,
                datacenter=vm.datacenter,
                vm_moref=moref,
                vm_name=vm.name,
                vmx_path=vm.vmx_path,
                snapshot_moref=snap.moref,
                snapshot_name=name,
                disks=tuple(
                    DiskRef(
                        key=d.key, capacity_bytes=d.capacity, datastore_path=d.file, change_id=d.change_id
                    )
                    for d in disks
                ),
            ),
            now,
        )
    _sync(deps)


async def _check_vm(deps: Deps, vcenter: str, moref: str, name: str, options: dict) -> VMInfo:  # type: ignore[type-arg]
    try:
        vm = await deps.vcenters.call(vcenter, lambda vc: vc.vm(moref))
    except Permanent as exc:
        if isinstance(exc.__cause__, NotFound):
            raise Permanent(f"VM {moref} does not exist on vCenter {vcenter} (removed or renamed?)") from None
        raise
    foreign = [s for s in vm.snapshots if not s.name.startswith("vbm-")]
    if foreign:
        names = ", ".join(repr(s.name) for s in foreign[:5])
        raise Permanent(
            f"VM {vm.name} has {len(foreign)} snapshot(s) not made by vbm ({names}): a backup would"
            " read a snapshot chain, not the disks. Delete or consolidate them in vCenter"
            " (Snapshots > Delete All), then run the job again."
        )
    minimum = float(options.get("min_free_percent", 5.0))
    space = await deps.vcenters.call(vcenter, lambda vc: vc.datastore_free(vm.datastores))
    for ds, (capacity, free) in space.items():
        if capacity and 100.0 * free / capacity < minimum:
            raise Permanent(
                f"datastore {ds} of VM {vm.name} has {100.0 * free / capacity:.1f}% free, below"
                f" the job's minimum of {minimum:.0f}%: a snapshot could fill it. Free space first."
            )
    return vm


def _enable_cbt(vc: VCenter, vm: VMInfo, name: str) -> bool:
    """Turn CBT on. Like vSphere, it takes effect after a stun cycle: a snapshot create+remove.
    True if the cycle was done (it cannot be on a powered-off VM or one with snapshots)."""
    vc.set_cbt(vm.moref, True)
    if vm.power_state == "poweredOn" and not vm.snapshots:
        cycle = vc.create_snapshot(vm.moref, name, description="vbm: CBT stun cycle")
        vc.remove_snapshot(cycle.moref)
        return True
    return False


async def _create(deps: Deps, vcenter: str, vm: VMInfo, name: str, options: dict) -> SnapshotInfo:  # type: ignore[type-arg]
    existing = [s for s in vm.snapshots if s.name == name]
    if existing:  # an earlier attempt's create completed after all
        return existing[0]
    quiesce = bool(options.get("quiesce", False))
    timeout = deps.ctx.settings.pipeline.snapshot_timeout

    def create(vc: VCenter) -> SnapshotInfo:
        desc = "vbm backup snapshot: removed automatically when the backup ends"
        try:
            return vc.create_snapshot(vm.moref, name, description=desc, quiesce=quiesce, timeout=timeout)
        except VSphereError as exc:
            if quiesce and options.get("quiesce_fallback", True) and not exc.retryable:
                log.warning("quiesced snapshot of %s failed (%s): crash-consistent instead", vm.name, exc)
                return vc.create_snapshot(vm.moref, name, description=desc, timeout=timeout)
            raise

    return await deps.vcenters.call(vcenter, create)


def _fail(deps: Deps, task_id: str, reason: str) -> None:
    ctx = deps.ctx
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        task = s.get(Task, task_id)
        if task is None:
            return
        state.fail_task(s, task, step="snapshot", reason=reason, now=now)
    _sync(deps)


async def on_transfer_done(event: TransferDone, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    """The data is safe in the repository: remove the snapshot now, before verification."""
    from shared.pipeline.cleanup import remove_entries

    await remove_entries(deps.ctx, deps.vcenters, task_id=event.task_id)
    return []
