"""Mover handler: read a snapshot's disks and commit a restore point.

Per disk it asks CBT what changed since the VM's newest good restore point in the same
repository and reads only those windows (an incremental); without a usable parent or change id
(first backup, CBT reset, disk resized) it makes a full, reading only what CBT reports allocated
when it can. The restore point is committed to the repository before the task moves on, and the
task is fenced: a mover that was declared dead (deadline passed) cannot commit over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import select

from services.mover.checkpoint import Checkpoint
from services.mover.deps import Deps
from services.mover.outcome import end, record
from services.mover.plan import (
    Plan,
    committed_earlier,
    flat_of,
    id_suffix,
    plan_disk,
    small_files,
    split,
    usable_parent,
)
from services.mover.streams import LeasesBusy, leased, stream_limits
from services.mover.tracker import CancellableDisk, Cancelled, Tracker, ours, still_ours
from shared.catalog import tasks as state
from shared.contracts import Event, SnapshotReady
from shared.db.models import Job, RestorePointRow, Run, Task
from shared.observe import tracing
from shared.repo import DiskEntry, FileEntry, RestorePoint, Writer, WriteStats, restore_point
from shared.repo.digests import OrderedSha256, write_sums
from shared.repo.errors import Misconfigured
from shared.repo.manifest import SkippedDiskEntry
from shared.runtime.bus import Delivery, Permanent, Retryable
from shared.vsphere.datastore import DownloadError

log = logging.getLogger(__name__)


async def on_snapshot_ready(event: SnapshotReady, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    deps.local.vm_started()
    try:
        return await _on_snapshot_ready(event, delivery, deps)
    finally:
        deps.local.vm_ended()


async def _on_snapshot_ready(event: SnapshotReady, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    ctx = deps.ctx
    with ctx.sessions() as s:
        task = s.get(Task, event.task_id)
        if not ours(task, event):
            return []  # stale: already moved on, ended, or another try
        assert task is not None
        host = task.host
        run = s.get(Run, event.run_id)
        job = s.get(Job, run.job_id) if run else None
        if job is None:
            raise Permanent(f"job of run {event.run_id} no longer exists")
        repository, use_cbt = job.repository, bool(job.options.get("cbt", True))
        parents = list(
            s.scalars(
                select(RestorePointRow.id)
                .where(
                    RestorePointRow.vm_moref == event.vm_moref,
                    RestorePointRow.vcenter == event.vcenter,
                    RestorePointRow.repository == repository,
                    RestorePointRow.verify_state != "failed",
                )
                .order_by(RestorePointRow.finished_at.desc())
                .limit(3)
            )
        )
    try:
        writer = await deps.writer(repository)
    except Misconfigured as exc:  # retrying cannot help: fail the task now, saying why
        raise Permanent(str(exc)) from exc
    parent = await usable_parent(writer.repo, parents)
    try:
        earlier = await committed_earlier(writer.repo, event)
        if earlier is not None:
            log.info("%s: restore point %s was committed by an earlier attempt", event.vm_name, earlier.id)
            record(deps, event, earlier, repository, WriteStats(), 0)
            return []
        return await _transfer(deps, event, writer, parent, use_cbt, repository, host)
    except Cancelled:
        end(deps, event, "cancelled", "cancelled by request")
        return []
    except state.Stale as exc:
        log.warning("%s: %s; dropping this transfer", event.vm_name, exc)
        return []
    except DownloadError as exc:
        if exc.retryable and not delivery.last_attempt:
            raise Retryable(str(exc)) from exc
        raise Permanent(str(exc)) from exc


async def _transfer(
    deps: Deps,
    event: SnapshotReady,
    writer: Writer,
    parent: RestorePoint | None,
    use_cbt: bool,
    repository: str,
    host: str | None,
) -> Sequence[Event]:
    ctx = deps.ctx
    started = ctx.clock()
    http = deps.client(event.vcenter)
    plans = []
    for d in event.disks:
        plans.append(await plan_disk(deps, event, d, parent, use_cbt, writer.repo.chunk_size))
    total = sum(p[3] for p in plans)
    tracker = Tracker(deps, event, total)
    for p in plans:  # each disk's part of the total, in the order of the VM's disks
        tracker.disk(p[0].key, f"Disk {p[0].key}", p[3])
    reporter = asyncio.create_task(tracker.run())
    stats = WriteStats()
    disks: list[DiskEntry] = []
    files: list[FileEntry] = []

    checkpoints: list[Checkpoint] = []
    resumed = False  # windows stored by an earlier attempt: their locks date from that attempt

    entries: dict[int, tuple[DiskEntry, FileEntry]] = {}
    sums: dict[str, dict[str, Any]] = {}  # disk key -> its SHA-256 (a full) or why not yet

    async def copy_disk(plan: Plan) -> None:
        nonlocal resumed
        d, parent_disk, (changed, allocated), _ = plan
        ds, flat = flat_of(d.datastore_path)
        raw = http.disk(event.datacenter, ds, flat, d.capacity_bytes)
        tracker.sources.append(raw)
        source = CancellableDisk(raw, tracker)
        cp = Checkpoint(writer.repo, event.task_id, d.key, event.snapshot_moref)
        known = await cp.load()
        if known:
            resumed = True
            log.info("%s disk %d: resuming, %d windows already stored", event.vm_name, d.key, len(known))
        checkpoints.append(cp)
        tracker.checkpoints = checkpoints
        sha = OrderedSha256(d.capacity_bytes, writer.repo.chunk_size)
        # one span per disk (not per window): reading it from the datastore, writing it to the repository
        with tracing.span("disk transfer", vm=event.vm_name, disk=d.key, capacity_bytes=d.capacity_bytes):
            entry, st = await writer.write_disk(
                source,
                key=d.key,
                capacity=d.capacity_bytes,
                file=flat,
                change_id=d.change_id,
                parent=parent_disk,
                parent_id=parent.id if parent and parent_disk else None,
                changed=changed,
                allocated=allocated,
                progress=tracker.disks[d.key],
                known=known,
                on_window=cp.add,
                sha256=sha,
            )
            tracing.annotate(bytes_read=st.bytes_read, bytes_stored=st.bytes_stored, full=changed is None)
        digest = sha.hexdigest()
        sums[str(d.key)] = {
            "file": flat,
            "size_bytes": d.capacity_bytes,
            "sha256": digest,
            "by": "mover" if digest else None,
            "why": sha.skipped,
        }
        stats.add(st)
        entries[d.key] = (entry, FileEntry(path=flat, size=d.capacity_bytes, disk_key=d.key))

    pending = list(plans)

    async def lane(extra: bool) -> None:
        """Disks one after the other on one stream: the VM's own (it waits for its leases), or a
        free one it borrowed (which takes a disk only when its leases are free at once, so that no
        VM waits with its snapshot open for another VM's streams)."""
        try:
            while pending:
                head = pending[0]
                ds = flat_of(head[0].datastore_path)[0]
                holder = f"{deps.ctx.instance}:{event.task_id}:{head[0].key}"

                def wanted(ds: str = ds) -> list[tuple[str, int]]:
                    return stream_limits(deps.ctx, event.vcenter, ds, host, repository)

                try:
                    async with leased(deps.ctx, holder, wanted, tracker.waiting(head[0].key), wait=not extra):
                        if not pending or pending[0] is not head:
                            continue  # another lane took it while the leases were asked for
                        pending.pop(0)
                        await copy_disk(head)
                except LeasesBusy:
                    return
        finally:
            if extra:
                deps.local.release_extra()

    async def copy() -> None:
        lanes = [lane(False)]
        while len(lanes) < len(plans) and deps.local.try_extra():
            lanes.append(lane(True))
        await _gather_all(lanes)
        for key in (d.key for d in event.disks):
            if key in entries:
                disks.append(entries[key][0])
                files.append(entries[key][1])
        for path in small_files(event):
            ds, rel = split(path)
            data = await http.get_file(event.datacenter, ds, rel)
            if data is None:
                log.warning("%s: %s does not exist, not backed up", event.vm_name, path)
                continue
            entry_f, st = await writer.write_file(rel, data)
            stats.add(st)
            files.append(entry_f)

    work = asyncio.create_task(copy())
    stop = asyncio.create_task(tracker.cancelled.wait())
    try:
        # A cancel (or the watchdog ending the task) aborts a read in flight, even a hung one.
        await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (stop, reporter, work):
            t.cancel()
        for t in (stop, reporter):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for cp in checkpoints:  # what was stored so far is not read again by a retry
            with contextlib.suppress(Exception):
                await cp.save()
        with contextlib.suppress(asyncio.CancelledError):
            await work  # its error, if any, is the one raised
    if tracker.ended:
        raise state.Stale(f"task {event.task_id} was ended while transferring")
    if tracker.cancelled.is_set():
        raise Cancelled()
    seconds = max((ctx.clock() - started).total_seconds(), 1e-3)
    await tracker.publish(stats.bytes_read / seconds)  # the last sample: every disk at its end
    finished = ctx.clock()
    rp = restore_point(
        rp_id=f"rp-{finished.astimezone(UTC):%Y%m%dT%H%M%SZ}-{id_suffix(event.task_id)}",
        vm_name=event.vm_name,
        started=started,
        finished=finished,
        disks=disks,
        files=files,
        parent=parent.id if parent and any(d.built_on for d in disks) else None,
        job_id=None,
        run_id=event.run_id,
        vcenter=event.vcenter,
        vm_moref=event.vm_moref,
        snapshot_name=event.snapshot_name,
        snapshot_moref=event.snapshot_moref,
        skipped=tuple(SkippedDiskEntry(key=d.key, label=d.label, reason=d.reason) for d in event.skipped),
    )
    still_ours(deps, event)
    await writer.repo.commit(rp, resumed=resumed)
    if all(v["sha256"] for v in sums.values()):  # every disk hashed: its object, next to the manifest
        try:
            await write_sums(writer.repo, rp.id, sums)
        except Exception as exc:  # the verifier writes it when it is missing
            log.warning("%s: SHA-256 object of %s not written: %s", event.vm_name, rp.id, exc)
    seconds = max((ctx.clock() - started).total_seconds(), 1e-3)
    # Done: the whole plan (windows found all zero count as done), at the transfer's average rate.
    record(deps, event, rp, repository, stats, total, stats.bytes_read / seconds, sums)
    for cp in checkpoints:
        with contextlib.suppress(Exception):  # leftovers are harmless; GC removes them
            await cp.clear()
    return []


async def _gather_all(coros: list[Any]) -> None:
    """Run them all; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
