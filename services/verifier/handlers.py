"""Verifier handler: check a new restore point before the backup counts as good.

Checks: the manifest loads and passes its checksum; every chunk exists and its content matches
its BLAKE3 digest (every chunk is read); each disk's tree digest matches its chunk list; each disk's
capacity equals what vCenter reports now (a changed size is reported, not a failure). On the way,
the SHA-256 of each disk image the mover could not hash (an incremental, a resumed full).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import object_session

from shared.catalog import audit, prune, replication
from shared.catalog import locations as locstore
from shared.catalog import tasks as state
from shared.catalog.alerts import raise_alert
from shared.contracts import Event, StepFailed, TransferDone, VerifyDone, VerifyRequested
from shared.db.models import Job, RestorePointRow, Task
from shared.model.audit import system
from shared.observe import tracing
from shared.observe.metrics import VERIFY_RESULTS
from shared.observe.oncommit import after_commit
from shared.repo import ChunkError, ManifestError, RepoError, Repository, digests
from shared.repo import chunk as chunks
from shared.repo.locations import opened
from shared.repo.manifest import expand, tree_digest
from shared.runtime.bus import Delivery, Permanent
from shared.runtime.outbox import stage
from shared.runtime.service import Context
from shared.vsphere import VSphereError
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)


@dataclass
class Deps:
    ctx: Context
    vcenters: VCenters


async def verify_restore_point(
    repo: Repository, rp_id: str, parallel: int = 4, known_sha256: Collection[int] = ()
) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """(problems, notes, SHA-256 of disks) of one restore point; no problems means it restores
    byte-identical.

    Problems: the manifest missing, damaged or invalid; a chunk missing or damaged (every chunk
    is read, its CRC and BLAKE3 digest checked); a disk's tree digest not matching its chunk
    list; a small file (vmx, nvram, descriptor) whose size or whole-file digest differs.

    The chunks of each disk not in `known_sha256` are read in disk order, and the SHA-256 of the
    disk's image (as `vbm repo export` writes it) is computed over them on the way (digests.py);
    the other chunks are read in any order.
    """
    try:
        rp = await repo.load(rp_id)
    except ManifestError as exc:
        return [str(exc)], [], {}
    problems: list[str] = []
    damaged: set[str] = set()

    def problem(exc: ChunkError) -> None:
        if exc.chunk not in damaged:
            damaged.add(exc.chunk)
            problems.append(str(exc))

    sums: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for disk in rp.disks:
        if disk.key in known_sha256:
            continue
        h, whole = hashlib.sha256(), True
        # one span per disk read back from the repository (not per chunk)
        with tracing.span("disk read", restore_point=rp_id, disk=disk.key, capacity_bytes=disk.capacity):
            async for data in digests.ordered_windows(repo, rp_id, disk, seen, problem, ahead=parallel):
                if data is None:
                    whole = False
                elif whole:
                    await asyncio.to_thread(h.update, data)
            tracing.annotate(whole=whole)
        sums[str(disk.key)] = {
            "file": disk.file,
            "size_bytes": disk.capacity,
            "sha256": h.hexdigest() if whole else None,
            "by": "verifier" if whole else None,
            "why": None if whole else digests.DAMAGED,
        }
    sem = asyncio.Semaphore(parallel)
    plain: dict[str, bytes] = {}  # the small files' chunks, kept to check their digests
    small = {e for f in rp.files for e in f.chunks if isinstance(e, str)}

    async def one(cid: str) -> None:
        async with sem:
            try:
                data = await repo.get_chunk(cid, rp_id)
            except ChunkError as exc:
                problem(exc)
                return
            if cid in small:
                plain[cid] = data

    await asyncio.gather(*(one(cid) for cid in sorted((rp.chunk_ids() - seen) | small)))
    for disk in rp.disks:
        if tree_digest(expand(disk.chunks), disk.capacity, disk.chunk_size) != disk.tree:
            problems.append(f"disk {disk.key}: tree digest does not match its chunk list")
    for f in rp.files:
        if f.disk_key is not None or f.digest is None:
            continue
        ids = expand(f.chunks)
        if any(cid is not None and cid not in plain for cid in ids):
            continue  # a damaged chunk of it is reported above
        size = repo.chunk_size
        data = b"".join(
            plain[cid] if cid is not None else bytes(min(size, f.size - i * size))
            for i, cid in enumerate(ids)
        )
        if len(data) != f.size:
            problems.append(f"file {f.path}: {len(data)} bytes stored, {f.size} recorded")
        elif chunks.chunk_id(data) != f.digest:
            problems.append(f"file {f.path}: its content does not match its recorded digest")
    return problems, [], sums


NOT_COMPARED = "sizes not compared"
ALIVE = 60.0  # seconds between marks of life of a verification in progress


async def _keep_alive(ctx: Context, task_id: str) -> None:
    """A verification that reads a big restore point for hours is alive: its deadline moves while
    it works (`verify_timeout` is how long one may go without a sign of life)."""
    while True:
        await asyncio.sleep(ALIVE)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(_extend, ctx, task_id)


def _extend(ctx: Context, task_id: str) -> None:
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        task = s.get(Task, task_id)
        if task is not None and task.phase == "verify" and task.state not in state.FINAL:
            task.updated_at = now
            task.deadline_at = now + timedelta(seconds=ctx.settings.pipeline.verify_timeout)


async def compare_sizes(deps: Deps, vcenter: str, vm_moref: str, disks: list[dict[str, Any]]) -> list[str]:
    """Notes (never failures) where a disk's size in vCenter now differs from the backup's."""
    notes: list[str] = []
    try:
        vm = await asyncio.to_thread(deps.vcenters.get(vcenter).vm, vm_moref)
    except Permanent:  # the pool: that vCenter is not configured (any more)
        return [f"{NOT_COMPARED}: vCenter {vcenter!r} is no longer configured"]
    except VSphereError as exc:
        return [f"{NOT_COMPARED} with vCenter: {exc}"]
    now_sizes = {d.key: d.capacity for d in vm.disks}
    for d in disks:
        if d["key"] not in now_sizes:
            notes.append(f"disk {d['key']} is no longer attached to the VM in vCenter")
        elif now_sizes[d["key"]] != d["capacity"]:
            notes.append(
                f"disk {d['key']} is now {now_sizes[d['key']]} bytes in vCenter,"
                f" {d['capacity']} in the backup (resized since)"
            )
    return notes


async def check(deps: Deps, row: RestorePointRow) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """Verify a catalogued restore point: repository contents (and the SHA-256 of each disk not
    known yet, written next to the manifest once every disk has one), then sizes against vCenter."""
    known = {int(k) for k, v in (row.sha256 or {}).items() if v.get("sha256")}
    sums: dict[str, dict[str, Any]] = {}
    try:
        credentials = locstore.lookup(deps.ctx.settings, deps.ctx.sessions)
        async with opened(row.repository, credentials(row.repository)) as repo:
            problems, notes, sums = await verify_restore_point(repo, row.id, known_sha256=known)
            every = {**(row.sha256 or {}), **sums}
            if not problems and every and all(v.get("sha256") for v in every.values()):
                await digests.write_sums(repo, row.id, every)  # once: kept if it exists
    except RepoError as exc:
        problems, notes = [f"repository {row.repository}: {exc}"], []
    notes += await compare_sizes(deps, row.vcenter, row.vm_moref, row.disks)
    return problems, notes, sums


def record(
    row: RestorePointRow,
    problems: list[str],
    notes: list[str],
    how: str,
    now: datetime,
    sums: dict[str, dict[str, Any]] | None = None,
) -> None:
    if sums:
        row.sha256 = {**(row.sha256 or {}), **sums}
    row.verify_state = "failed" if problems else "ok"
    row.verified_at = now
    counted = VERIFY_RESULTS.labels(repository=row.repository, result=row.verify_state, how=how)
    session = object_session(row)
    if session is not None:
        after_commit(session, counted.inc)
    row.verify_problems = problems
    row.verify_notes = notes
    row.verify_how = how


async def on_verify_requested(event: VerifyRequested, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    """Verify on demand; the result is stored on the restore point and published."""
    ctx = deps.ctx
    with ctx.sessions() as s:
        row = s.get(RestorePointRow, event.restore_point_id)
        if row is None:
            log.warning(
                "verify %s: no restore point %s in the catalog", event.request_id, event.restore_point_id
            )
            return []
        s.expunge(row)
    problems, notes, sums = await check(deps, row)
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        live = s.get(RestorePointRow, event.restore_point_id)
        if live is None:
            return []  # removed meanwhile (retention)
        record(live, problems, notes, "on demand", now, sums)
        stage(
            s,
            VerifyDone(
                occurred_at=now,
                request_id=event.request_id,
                restore_point_id=event.restore_point_id,
                ok=not problems,
                problems=tuple(problems),
                notes=tuple(notes),
            ),
            now,
        )
        if problems:
            raise_alert(
                s,
                key=f"verify-failed:{event.restore_point_id}:{event.request_id}",
                kind="verify_failed",
                severity="error",
                message=(
                    f"restore point {event.restore_point_id} of {live.vm_name} failed verification:"
                    f" {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                ),
                now=now,
                vm_name=live.vm_name,
            )
    ctx.relay.kick()
    return []


async def on_transfer_done(event: TransferDone, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    ctx = deps.ctx
    with ctx.sessions() as s:
        task = s.get(Task, event.task_id)
        row = s.get(RestorePointRow, event.restore_point_id)
        if task is None or row is None or task.phase != "verify" or task.state in state.FINAL:
            return []
        vcenter, vm_moref = row.vcenter, row.vm_moref
        s.expunge(row)
    alive = asyncio.create_task(_keep_alive(ctx, event.task_id))
    try:
        problems, notes, sums = await check(deps, row)
    finally:
        alive.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await alive
    ok = not problems
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        row = s.get(RestorePointRow, event.restore_point_id)
        task = s.get(Task, event.task_id)
        if (
            row is None
            or task is None
            or task.phase != "verify"
            or task.state in state.FINAL
            or task.restore_point_id != event.restore_point_id
        ):
            return []  # the task moved on meanwhile (the watchdog, another try): this verdict is late
        record(row, problems, notes, "after backup", now, sums)
        stage(
            s,
            VerifyDone(
                occurred_at=now,
                run_id=event.run_id,
                task_id=event.task_id,
                restore_point_id=event.restore_point_id,
                ok=ok,
                problems=tuple(problems),
                notes=tuple(notes),
            ),
            now,
        )
        job_id = row.job_id
        if ok:
            for note in notes:  # the VM changed since (a disk resized or detached): worth a warning
                if not note.startswith(NOT_COMPARED):
                    state.warn(s, task, f"verified, but {note}", now)
            state.end_task(s, task, "succeeded", now)
            job = s.get(Job, job_id) if job_id else None
            for target in (job.options or {}).get("replicate_to", ()) if job is not None else ():
                if target != row.repository:  # a copy of a repository onto itself is no copy
                    replication.request(s, row.id, target, now)
        else:
            reason = f"restore point {event.restore_point_id} failed verification: {problems[0]}"
            job = s.get(Job, job_id) if job_id else None
            policy = state.RetryPolicy.of(ctx.settings, job)
            if state.try_failed(s, task, step="verify", reason=reason, now=now, policy=policy) != "retry":
                stage(
                    s,
                    StepFailed.of(event, "verify", reason, now, vcenter=vcenter, vm_moref=vm_moref),
                    now,
                )
    ctx.relay.kick()
    if ok:  # a new good restore point: retention may let older ones go now
        try:
            pruned = await prune.apply(ctx.sessions, ctx.settings, now, job_id=job_id, vm=vm_moref)
        except Exception:
            log.exception("pruning after %s failed (the backup itself is fine)", event.restore_point_id)
        else:
            for rp_id, reason in pruned:
                log.info("pruned %s of %s: %s", rp_id, vm_moref, reason)
            if pruned:
                await asyncio.to_thread(
                    audit.try_append, ctx.sessions, actor=system(ctx.service), action="prune",
                    target=f"vm:{vcenter}/{vm_moref}" + (f" job:{job_id}" if job_id else ""),
                    params={"removed": [{"id": rp_id, "rule": why} for rp_id, why in pruned]},
                )  # fmt: skip
    return []
