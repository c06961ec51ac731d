"""What a backup reads: per disk the CBT windows changed since its parent (or allocated, for a
full), the VM's small files, and the parent restore point or one an earlier attempt committed."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath

from services.mover.deps import Deps
from shared.contracts import DiskRef, SnapshotReady
from shared.observe.metrics import CBT_CHANGED_BYTES
from shared.repo import DiskEntry, ManifestError, Repository, RestorePoint, touched_windows
from shared.runtime.bus import Permanent

log = logging.getLogger(__name__)

Ranges = list[tuple[int, int]] | None
Plan = tuple[DiskRef, DiskEntry | None, tuple[Ranges, Ranges], int]


async def plan_disk(
    deps: Deps,
    event: SnapshotReady,
    d: DiskRef,
    parent: RestorePoint | None,
    use_cbt: bool,
    chunk_size: int,
) -> Plan:
    """(disk, parent disk or None, (changed, allocated), bytes to read) for one disk."""
    parent_disk = None
    if parent is not None:
        parent_disk = next((p for p in parent.disks if p.key == d.key), None)
    changed = allocated = None
    if use_cbt and d.change_id:
        since = parent_disk.change_id if parent_disk is not None else None
        if since and parent_disk is not None and parent_disk.capacity == d.capacity_bytes:
            try:
                changed = await deps.vcenters.call(
                    event.vcenter,
                    lambda vc: vc.changed_areas(
                        event.vm_moref, event.snapshot_moref, d.key, d.capacity_bytes, since
                    ),
                )
            except Permanent as exc:
                log.warning(
                    "%s disk %d: CBT cannot answer since %s (%s): full backup",
                    event.vm_name,
                    d.key,
                    since,
                    exc,
                )
        if changed is None:
            allocated = await deps.vcenters.call(
                event.vcenter,
                lambda vc: vc.changed_areas(
                    event.vm_moref, event.snapshot_moref, d.key, d.capacity_bytes, "*"
                ),
            )
    if changed is None:
        parent_disk = None
    else:
        CBT_CHANGED_BYTES.labels(vm=event.vm_name, vcenter=event.vcenter).inc(sum(n for _, n in changed))
    ranges = changed if changed is not None else allocated
    if ranges is None:
        reads = d.capacity_bytes
    else:
        windows = touched_windows(ranges, chunk_size, d.capacity_bytes)
        reads = sum(min(chunk_size, d.capacity_bytes - i * chunk_size) for i in windows)
    return d, parent_disk, (changed, allocated), reads


def small_files(event: SnapshotReady) -> list[str]:
    ds, vmx = split(event.vmx_path)
    folder = posixpath.dirname(vmx)
    paths = [event.vmx_path, f"[{ds}] {posixpath.join(folder, posixpath.basename(vmx)[:-4] + '.nvram')}"]
    paths += [d.datastore_path for d in event.disks]  # the descriptors
    return paths


def flat_of(datastore_path: str) -> tuple[str, str]:
    """'[ds1] web/web.vmdk' -> ('ds1', 'web/web-flat.vmdk')."""
    ds, _, path = datastore_path.partition("] ")
    path = path[: -len(".vmdk")] + "-flat.vmdk" if path.endswith(".vmdk") else path
    return ds.lstrip("["), path


def split(datastore_path: str) -> tuple[str, str]:
    ds, _, path = datastore_path.partition("] ")
    return ds.lstrip("["), path


async def usable_parent(repo: Repository, ids: list[str]) -> RestorePoint | None:
    for rp_id in ids:
        with contextlib.suppress(ManifestError):
            return await repo.load(rp_id)
    return None


def id_suffix(task_id: str) -> str:
    """The last part of a restore point's id, derived from its task (instead of random), so a
    retry finds what an earlier attempt committed before it died or failed to record it."""
    return hashlib.sha256(task_id.encode()).hexdigest()[:8]


async def committed_earlier(repo: Repository, event: SnapshotReady) -> RestorePoint | None:
    """A restore point of this task already in the repository (an earlier attempt committed it,
    then died before the catalog knew): recording it is right, writing a second one is not."""
    suffix = "-" + id_suffix(event.task_id)
    for rp_id in await repo.restore_point_ids():
        if rp_id.endswith(suffix):
            with contextlib.suppress(ManifestError):
                rp = await repo.load(rp_id)
                same_try = rp.snapshot_moref == event.snapshot_moref  # each try has its own snapshot
                if rp.run_id == event.run_id and rp.vm_moref == event.vm_moref and same_try:
                    return rp
    return None
