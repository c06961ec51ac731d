"""Verifier handler: check a new restore point before the backup counts as good.

Checks: the manifest loads and passes its checksum; every chunk exists and its content matches
its BLAKE3 digest (every chunk is read); each disk's tree digest matches its chunk list; each disk's
capacity equals what vCenter reports now (a changed size is reported, not a failure).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from shared.bus import Delivery
from shared.contracts import Event, StepFailed, TransferDone, VerifyDone
from shared.db.models import RestorePointRow, Task
from shared.outbox import stage
from shared.pipeline import state
from shared.pipeline.vcenters import VCenters
from shared.repo import ChunkError, LocalBackend, ManifestError, RepoError, Repository
from shared.repo.manifest import expand, tree_digest
from shared.runtime import Context
from shared.vsphere import VSphereError

log = logging.getLogger(__name__)


@dataclass
class Deps:
    ctx: Context
    vcenters: VCenters


async def verify_restore_point(
    repo: Repository, rp_id: str, parallel: int = 4
) -> tuple[list[str], list[str]]:
    """(problems, notes) of one restore point; no problems means it restores byte-identical."""
    try:
        rp = await repo.load(rp_id)
    except ManifestError as exc:
        return [str(exc)], []
    problems: list[str] = []
    sem = asyncio.Semaphore(parallel)

    async def one(cid: str) -> None:
        async with sem:
            try:
                await repo.get_chunk(cid, rp_id)
            except ChunkError as exc:
                problems.append(str(exc))

    await asyncio.gather(*(one(cid) for cid in sorted(rp.chunk_ids())))
    for disk in rp.disks:
        if tree_digest(expand(disk.chunks), disk.capacity, disk.chunk_size) != disk.tree:
            problems.append(f"disk {disk.key}: tree digest does not match its chunk list")
    return problems, []


async def on_transfer_done(event: TransferDone, delivery: Delivery, deps: Deps) -> Sequence[Event]:
    ctx = deps.ctx
    with ctx.sessions() as s:
        task = s.get(Task, event.task_id)
        row = s.get(RestorePointRow, event.restore_point_id)
        if task is None or row is None or task.phase != "verify" or task.state in state.FINAL:
            return []
        location, vcenter, vm_moref, disks = row.repository, row.vcenter, row.vm_moref, row.disks
    try:
        repo = await Repository.open(LocalBackend(location))
        problems, notes = await verify_restore_point(repo, event.restore_point_id)
    except RepoError as exc:
        problems, notes = [f"repository {location}: {exc}"], []
    try:
        vm = await asyncio.to_thread(deps.vcenters.get(vcenter).vm, vm_moref)
        now_sizes = {d.key: d.capacity for d in vm.disks}
        for d in disks:
            if d["key"] in now_sizes and now_sizes[d["key"]] != d["capacity"]:
                notes.append(
                    f"disk {d['key']} is now {now_sizes[d['key']]} bytes in vCenter,"
                    f" {d['capacity']} in the backup (resized since)"
                )
    except VSphereError as exc:
        notes.append(f"sizes not compared with vCenter: {exc}")
    ok = not problems
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        row = s.get(RestorePointRow, event.restore_point_id)
        task = s.get(Task, event.task_id)
        assert row is not None and task is not None
        row.verify_state = "ok" if ok else "failed"
        row.verified_at = now
        row.verify_problems = problems + notes
        stage(
            s,
            VerifyDone(
                occurred_at=now,
                run_id=event.run_id,
                task_id=event.task_id,
                restore_point_id=event.restore_point_id,
                ok=ok,
                problems=tuple(problems + notes),
            ),
            now,
        )
        if ok:
            state.end_task(s, task, "succeeded", now)
        else:
            reason = f"restore point {event.restore_point_id} failed verification: {problems[0]}"
            stage(
                s,
                StepFailed(
                    occurred_at=now,
                    run_id=event.run_id,
                    task_id=event.task_id,
                    step="verify",
                    reason=reason,
                    vcenter=vcenter,
                    vm_moref=vm_moref,
                ),
                now,
            )
            state.end_task(s, task, "failed", now, reason)
    ctx.relay.kick()
    return []
