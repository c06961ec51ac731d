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
import hashlib
import logging
import os
import posixpath
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import select

from services.mover.checkpoint import Checkpoint
from services.mover.streams import Latency, LeasesBusy, LocalStreams, leased, stream_limits
from shared.catalog import tasks as state
from shared.contracts import (
    DiskRef,
    Event,
    SnapshotReady,
    StepFailed,
    TaskProgress,
    TransferDone,
    cancel_subject,
    progress_subject,
)
from shared.db.models import Job, RestorePointRow, Run, Task
from shared.repo import (
    DiskEntry,
    FileEntry,
    LocalBackend,
    ManifestError,
    NotARepository,
    Repository,
    RestorePoint,
    Writer,
    WriteStats,
    restore_point,
    touched_windows,
)
from shared.repo.errors import Misconfigured
from shared.repo.locations import Credentials, open_backend
from shared.repo.manifest import SkippedDiskEntry
from shared.runtime.bus import Delivery, Permanent, Retryable
from shared.runtime.outbox import stage
from shared.runtime.service import Context
from shared.vsphere.datastore import DatastoreHTTP, DownloadError
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)


class Cancelled(Exception):
    pass


@dataclass
class Deps:
    ctx: Context
    vcenters: VCenters
    http: dict[str, DatastoreHTTP] = field(default_factory=dict)
    writers: dict[str, Writer] = field(default_factory=dict)
    local: LocalStreams = field(default_factory=lambda: LocalStreams(1))
    opening: dict[str, asyncio.Lock] = field(default_factory=dict)
    latency: Latency | None = None

    def client(self, vcenter: str) -> DatastoreHTTP:
        if vcenter not in self.http:
            vc = self.vcenters.get(vcenter)

            async def cookie() -> str:
                return await asyncio.to_thread(vc.session_cookie)

            # Enough connections for every stream's window workers to read at once.
            workers = self.ctx.settings.pipeline.workers or 4
            client = DatastoreHTTP(
                vc.base_url,
                cookie,
                verify_tls=vc.settings.verify_tls,
                ca_file=vc.settings.ca_file,
                connections=min(64, max(4, self.local.total * workers)),
            )
            if self.latency is not None:
                client.observer = self.latency.observer(vcenter)
            self.http[vcenter] = client
        return self.http[vcenter]

    async def writer(self, location: str) -> Writer:
        """One writer per repository; the first use of a location opens it (or initializes it
        when empty) once, however many VMs ask at the same time."""
        lock = self.opening.setdefault(location, asyncio.Lock())
        async with lock:
            return await self._writer(location)

    async def _writer(self, location: str) -> Writer:
        if location not in self.writers:
            backend = open_backend(location, Credentials.of(self.ctx.settings))
            try:
                repo = await Repository.open(backend)
            except NotARepository:
                if isinstance(backend, LocalBackend):
                    empty = await asyncio.to_thread(_empty_or_missing, location)
                else:  # an object store: no object under the location's prefix
                    empty = not [o async for o in _first(backend.list(""))]
                if not empty:
                    raise
                repo = await Repository.init(backend)  # first backup to an empty location
            workers = self.ctx.settings.pipeline.workers or None
            self.writers[location] = Writer(repo, workers=workers) if workers else Writer(repo)
        return self.writers[location]

    async def close(self) -> None:
        for client in self.http.values():
            await client.close()
        for writer in self.writers.values():
            writer.close()
            await writer.repo.backend.close()


def _empty_or_missing(location: str) -> bool:
    if os.path.isdir(location) and os.listdir(location):
        return False
    os.makedirs(location, exist_ok=True)
    return True


@dataclass
class Tracker:
    """Counts bytes, reports progress (database and live subject) and notices cancellation."""

    deps: Deps
    event: SnapshotReady
    total: int
    done: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False  # the task was ended by someone else (watchdog): drop the work
    saved: int = -1  # bytes done at the last extension of the deadline
    checkpoints: list[Checkpoint] = field(default_factory=list)
    notes: dict[int, str] = field(default_factory=dict)  # disk key -> what it waits for
    sources: list[Any] = field(default_factory=list)  # disks being read: bytes arriving = alive
    received: int = -1

    def __call__(self, n: int) -> None:
        self.done += n

    def waiting(self, disk: int) -> Any:
        """A setter for one disk's note (None: no longer waiting)."""

        def say(note: str | None) -> None:
            if note is None:
                self.notes.pop(disk, None)
            else:
                self.notes[disk] = note

        return say

    @property
    def note(self) -> str | None:
        return "; ".join(sorted(set(self.notes.values()))) or None

    async def run(self) -> None:
        ctx = self.deps.ctx
        started = asyncio.get_running_loop().time()
        sub = await ctx.bus.nc.subscribe(cancel_subject(self.event.run_id), cb=self._on_cancel)
        try:
            if await asyncio.to_thread(self._save, 0.0):  # the plan's total shows at once
                self.cancelled.set()
                return
            while True:
                await asyncio.sleep(1.0)
                elapsed = max(asyncio.get_running_loop().time() - started, 1e-3)
                rate = self.done / elapsed
                for cp in self.checkpoints:
                    with contextlib.suppress(Exception):  # a checkpoint is an optimisation only
                        await cp.save()
                if await asyncio.to_thread(self._save, rate):
                    self.cancelled.set()
                    return
                now = ctx.clock()
                with contextlib.suppress(Exception):
                    await ctx.bus.publish_live(
                        progress_subject(self.event.run_id),
                        TaskProgress(
                            run_id=self.event.run_id,
                            task_id=self.event.task_id,
                            vm_name=self.event.vm_name,
                            phase="transfer",
                            bytes_done=self.done,
                            bytes_total=self.total,
                            rate=rate,
                            sent_at=now,
                            note=self.note,
                        ),
                    )
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_cancel(self, _msg: object) -> None:
        self.cancelled.set()

    def _save(self, rate: float) -> bool:
        ctx = self.deps.ctx
        now = ctx.clock()
        with ctx.sessions.begin() as s:
            task = s.get(Task, self.event.task_id)
            run = s.get(Run, self.event.run_id)
            if not _ours(task, self.event):
                self.ended = True  # someone else ended it (or began another try): stop
                return True
            assert task is not None
            task.bytes_done, task.bytes_total, task.rate = self.done, self.total, rate
            task.wait_reason = self.note
            # Progress extends the deadline, and so do bytes arriving within a window (a slow
            # link) and waiting for a stream (throttled): a mover that stalls or dies writes
            # nothing, and the watchdog catches it.
            received = sum(src.received for src in self.sources)
            arriving = received != self.received
            self.received = received
            if self.done != self.saved or self.note or arriving:
                self.saved = self.done
                task.updated_at = now
                task.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.transfer_stall)
            return bool(run is not None and run.cancel_requested)


class CancellableDisk:
    def __init__(self, inner: object, tracker: Tracker) -> None:
        self.inner = inner
        self.tracker = tracker

    async def read(self, offset: int, length: int) -> bytes:
        if self.tracker.cancelled.is_set():
            raise Cancelled("cancelled")
        return await self.inner.read(offset, length)  # type: ignore[attr-defined, no-any-return]

    async def read_into(self, offset: int, buf: memoryview) -> None:
        if self.tracker.cancelled.is_set():
            raise Cancelled("cancelled")
        await self.inner.read_into(offset, buf)  # type: ignore[attr-defined]


def flat_of(datastore_path: str) -> tuple[str, str]:
    """'[ds1] web/web.vmdk' -> ('ds1', 'web/web-flat.vmdk')."""
    ds, _, path = datastore_path.partition("] ")
    path = path[: -len(".vmdk")] + "-flat.vmdk" if path.endswith(".vmdk") else path
    return ds.lstrip("["), path


def split(datastore_path: str) -> tuple[str, str]:
    ds, _, path = datastore_path.partition("] ")
    return ds.lstrip("["), path


def _ours(task: Task | None, event: SnapshotReady) -> bool:
    """Whether the task is still in this event's transfer: not ended, not moved on, and not in
    another try (each try has its own snapshot)."""
    return (
        task is not None
        and task.phase == "transfer"
        and task.state not in state.FINAL
        and task.snapshot_moref == event.snapshot_moref
    )


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
        if not _ours(task, event):
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
    parent = await _usable_parent(writer.repo, parents)
    try:
        earlier = await _committed_earlier(writer.repo, event)
        if earlier is not None:
            log.info("%s: restore point %s was committed by an earlier attempt", event.vm_name, earlier.id)
            _record(deps, event, earlier, repository, WriteStats(), 0)
            return []
        return await _transfer(deps, event, writer, parent, use_cbt, repository, host)
    except Cancelled:
        _end(deps, event, "cancelled", "cancelled by request")
        return []
    except state.Stale as exc:
        log.warning("%s: %s; dropping this transfer", event.vm_name, exc)
        return []
    except DownloadError as exc:
        if exc.retryable and not delivery.last_attempt:
            raise Retryable(str(exc)) from exc
        raise Permanent(str(exc)) from exc


async def _usable_parent(repo: Repository, ids: list[str]) -> RestorePoint | None:
    for rp_id in ids:
        with contextlib.suppress(ManifestError):
            return await repo.load(rp_id)
    return None


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
        plans.append(await _plan(deps, event, d, parent, use_cbt, writer.repo.chunk_size))
    total = sum(p[3] for p in plans)
    tracker = Tracker(deps, event, total)
    reporter = asyncio.create_task(tracker.run())
    stats = WriteStats()
    disks: list[DiskEntry] = []
    files: list[FileEntry] = []

    checkpoints: list[Checkpoint] = []
    resumed = False  # windows stored by an earlier attempt: their locks date from that attempt

    entries: dict[int, tuple[DiskEntry, FileEntry]] = {}

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
            progress=tracker,
            known=known,
            on_window=cp.add,
        )
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
        for path in _small_files(event):
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
    finished = ctx.clock()
    rp = restore_point(
        rp_id=f"rp-{finished.astimezone(UTC):%Y%m%dT%H%M%SZ}-{_id_suffix(event.task_id)}",
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
    _still_ours(deps, event)
    await writer.repo.commit(rp, resumed=resumed)
    seconds = max((ctx.clock() - started).total_seconds(), 1e-3)
    # Done: the whole plan (windows found all zero count as done), at the transfer's average rate.
    _record(deps, event, rp, repository, stats, total, stats.bytes_read / seconds)
    for cp in checkpoints:
        with contextlib.suppress(Exception):  # leftovers are harmless; GC removes them
            await cp.clear()
    return []


def _id_suffix(task_id: str) -> str:
    """The last part of a restore point's id, derived from its task (instead of random), so a
    retry finds what an earlier attempt committed before it died or failed to record it."""
    return hashlib.sha256(task_id.encode()).hexdigest()[:8]


async def _committed_earlier(repo: Repository, event: SnapshotReady) -> RestorePoint | None:
    """A restore point of this task already in the repository (an earlier attempt committed it,
    then died before the catalog knew): recording it is right, writing a second one is not."""
    suffix = "-" + _id_suffix(event.task_id)
    for rp_id in await repo.restore_point_ids():
        if rp_id.endswith(suffix):
            with contextlib.suppress(ManifestError):
                rp = await repo.load(rp_id)
                same_try = rp.snapshot_moref == event.snapshot_moref  # each try has its own snapshot
                if rp.run_id == event.run_id and rp.vm_moref == event.vm_moref and same_try:
                    return rp
    return None


def _record(
    deps: Deps,
    event: SnapshotReady,
    rp: RestorePoint,
    repository: str,
    stats: WriteStats,
    done: int,
    rate: float = 0.0,
) -> None:
    """In one transaction: the catalog row, the task's move to verify, `vbm.transfer.done`."""
    ctx = deps.ctx
    kind = "incremental" if rp.parent else "full"
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        run = s.get(Run, event.run_id)
        s.add(
            RestorePointRow(
                id=rp.id,
                task_id=event.task_id,
                run_id=event.run_id,
                job_id=run.job_id if run else None,
                vcenter=event.vcenter,
                vm_moref=event.vm_moref,
                vm_name=event.vm_name,
                repository=repository,
                kind=kind,
                parent=rp.parent,
                disks=[
                    {
                        "key": d.key,
                        "capacity": d.capacity,
                        "change_id": d.change_id,
                        "stored_windows": d.stored_windows,
                    }
                    for d in rp.disks
                ],
                logical_bytes=sum(d.capacity for d in rp.disks),
                bytes_read=stats.bytes_read,
                bytes_stored=stats.bytes_stored,
                started_at=rp.started,
                finished_at=rp.finished,
                verify_state="pending",
                verify_problems=[],
            )
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


Ranges = list[tuple[int, int]] | None
Plan = tuple[DiskRef, DiskEntry | None, tuple[Ranges, Ranges], int]


async def _plan(
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
    ranges = changed if changed is not None else allocated
    if ranges is None:
        reads = d.capacity_bytes
    else:
        windows = touched_windows(ranges, chunk_size, d.capacity_bytes)
        reads = sum(min(chunk_size, d.capacity_bytes - i * chunk_size) for i in windows)
    return d, parent_disk, (changed, allocated), reads


def _small_files(event: SnapshotReady) -> list[str]:
    ds, vmx = split(event.vmx_path)
    folder = posixpath.dirname(vmx)
    paths = [event.vmx_path, f"[{ds}] {posixpath.join(folder, posixpath.basename(vmx)[:-4] + '.nvram')}"]
    paths += [d.datastore_path for d in event.disks]  # the descriptors
    return paths


def _still_ours(deps: Deps, event: SnapshotReady) -> None:
    with deps.ctx.sessions() as s:
        if not _ours(s.get(Task, event.task_id), event):
            raise state.Stale(f"task {event.task_id} was ended while transferring")


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


def _end(deps: Deps, event: SnapshotReady, how: str, reason: str) -> None:
    ctx = deps.ctx
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        task = s.get(Task, event.task_id)
        if task is not None:
            state.end_task(s, task, how, now, reason)
        stage(
            s,
            StepFailed(
                occurred_at=now,
                run_id=event.run_id,
                task_id=event.task_id,
                step="transfer",
                reason=reason,
                vcenter=event.vcenter,
                vm_moref=event.vm_moref,
                snapshot_moref=event.snapshot_moref,
            ),
            now,
        )
    ctx.relay.kick()


async def _first(objects: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for obj in objects:
        yield obj
        return
