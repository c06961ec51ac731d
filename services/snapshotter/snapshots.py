"""What the snapshot step asks of vCenter: the checks before a snapshot (the VM, foreign
snapshots, datastore space), the disks a snapshot holds, CBT's stun cycle, the create (asked
again only when vCenter said it failed) and the removal of a snapshot made too late."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.snapshotter.handlers import Deps
from shared.catalog import ledger, marker
from shared.catalog import tasks as state
from shared.contracts import SkippedDisk
from shared.db.models import Job, Task
from shared.pipeline.cleanup import remove_one
from shared.runtime.bus import Permanent, Retryable
from shared.vsphere import DiskInfo, NotFound, SnapshotInfo, VCenter, VMInfo, VSphereError

log = logging.getLogger(__name__)

RETRY_CALLS = (2.0, 5.0)  # a busy vCenter is asked again after these waits, within one try


async def call(deps: Deps, vcenter: str, fn: Any) -> Any:
    """A vCenter call; a busy or unreachable vCenter is asked again twice before the try fails."""
    for wait in (*RETRY_CALLS, None):
        try:
            return await deps.vcenters.call(vcenter, fn)
        except Retryable:
            if wait is None:
                raise
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


EXCLUDED = "excluded by the job"  # as shared/vsphere/selection.py says it


def excluded_disks(job: Job, vcenter: str, moref: str, name: str) -> set[int]:
    """Disk keys the job excludes for this VM (`exclude.disks`, naming it by moref or name)."""
    out: set[int] = set()
    for rule in ((job.selection or {}).get("exclude") or {}).get("disks") or []:
        vm = rule.get("vm") or {}
        same = vm.get("moref") == moref or (not vm.get("moref") and vm.get("name") == name)
        if same and (vm.get("vcenter") or job.vcenter) == vcenter:
            out.update(int(k) for k in rule.get("keys") or [])
    return out


def split_disks(disks: list[DiskInfo], excluded: set[int]) -> tuple[list[DiskInfo], list[SkippedDisk]]:
    taken, skipped = [], []
    for d in disks:
        why = EXCLUDED if d.key in excluded else d.unreadable
        if why:
            skipped.append(SkippedDisk(key=d.key, label=d.label, reason=why))
        else:
            taken.append(d)
    return taken, skipped


async def check_vm(deps: Deps, vcenter: str, moref: str, options: dict[str, Any]) -> VMInfo:
    try:
        vm: VMInfo = await call(deps, vcenter, lambda vc: vc.vm(moref))
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
    space = await call(deps, vcenter, lambda vc: vc.datastore_free(vm.datastores))
    for ds, (capacity, free) in space.items():
        if capacity and 100.0 * free / capacity < minimum:
            raise Permanent(
                f"datastore {ds} of VM {vm.name} has {100.0 * free / capacity:.1f}% free, below"
                f" the job's minimum of {minimum:.0f}%: a snapshot could fill it. Free space first."
            )
    return vm


class StunCycleLeft(Exception):
    """The stun cycle's snapshot was made and could not be removed (the cause says why)."""


def enable_cbt(vc: VCenter, vm: VMInfo, name: str, description: str) -> bool:
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


async def create(
    deps: Deps,
    fence: Callable[[], Awaitable[None]],
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
    own name). `fence` raises when the step is no longer this one's (before asking again)."""
    existing = [s for s in vm.snapshots if s.name == name]
    if existing:  # an earlier attempt's create completed after all
        return existing[0], None
    quiesce = bool(options.get("quiesce", False))
    timeout = deps.ctx.settings.pipeline.snapshot_timeout
    fell_back: list[str] = []

    def make(vc: VCenter) -> SnapshotInfo:
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
            snap: SnapshotInfo = await deps.vcenters.call(vcenter, make)
            return snap, (fell_back[0] if fell_back else None)
        except Retryable as exc:
            cause = exc.__cause__
            if wait is None or not (isinstance(cause, VSphereError) and cause.settled):
                raise
            log.info("snapshot of %s failed (%s): asking again in %.0f s", vm.name, exc, wait)
            await asyncio.sleep(wait)
            await fence()
    raise AssertionError("unreachable")


async def abandon(deps: Deps, task_id: str, name: str, vcenter: str, moref: str, made: str) -> None:
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
