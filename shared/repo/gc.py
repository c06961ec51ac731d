"""Garbage collection: remove the chunks no restore point references, never one still needed.

Pruning removes manifests only (`Repository.forget`); GC reclaims their chunks. It is a mark and
sweep (as Proxmox Backup Server's, with modification times instead of access times):

1. **mark**: load every manifest; the union of their chunk ids is what is referenced. A manifest
   that does not load stops the GC before anything is deleted (its chunks are unknown).
2. **sweep**: list the chunk objects; delete those not referenced *and* last modified before the
   cut-off, checked again at the moment of deleting (`delete_if_unused_since`: the local backend
   renames the object aside, then looks at its mtime, and puts it back if a writer refreshed it;
   a writer's refresh that finds it renamed reports it absent, so the writer stores it again).
   Backends refresh an object's modification time whenever a writer finds it present and
   relies on it (`exists`, `put_if_absent`), and a chunk a writer stores is new; so chunks
   that a running backup wrote or reused but has not yet referenced in a committed manifest are
   modified after that backup started. The caller therefore passes a cut-off no later than the
   start of the oldest running writer (and of this GC), minus a margin for clock skew.

3. **leftovers** (backends that write through hidden `.tmp-*` names: local, SFTP, rclone): an
   object a dead GC left moved aside (`.tmp-gc-<name>-<random>`) is put back under its name
   unless that name exists again (a writer may have relied on it just before the move: putting
   it back is always safe, the next GC decides again); any other `.tmp-*` (a write that died)
   last modified before the cut-off is removed.

One GC at a time per repository: the object `locks/gc` is created with put-if-absent and removed
at the end (only if it is still this GC's); a lock older than `stale_after` (a GC that died) is
taken over. So that a live GC is never taken over, a GC stops itself after `LEASE_SHARE` of
`stale_after` (the lock is never renewed): a sweep cut short reports `stopped_early`, keeps
everything it has not reached, and the next GC goes on from the start.
"""

from __future__ import annotations

import json
import posixpath
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.repo.backend import Backend, HasLeftovers, aside_original
from shared.repo.errors import ManifestError, ObjectMissing, RepoError
from shared.repo.repository import Repository

LOCK_KEY = "locks/gc"
LEASE_SHARE = 0.8  # of stale_after: a GC stops before another may take its lock over


class GCBusy(RepoError):
    """Another GC holds the repository's lock."""


@dataclass
class GCReport:
    restore_points: int = 0
    chunks_referenced: int = 0
    chunks_seen: int = 0
    chunks_removed: int = 0
    bytes_removed: int = 0
    chunks_spared_young: int = 0
    bytes_kept: int = 0
    removed: list[str] = field(default_factory=list)
    leftovers_removed: int = 0
    chunks_put_back: int = 0
    stopped_early: bool = False  # its time was up (see LEASE_SHARE); the next GC goes on


async def collect(
    repo: Repository,
    *,
    cutoff: datetime,
    now: datetime | None = None,
    stale_after: timedelta = timedelta(hours=6),
    dry_run: bool = False,
) -> GCReport:
    """Remove unreferenced chunks last modified before `cutoff`; see the module's docstring."""
    now = now or datetime.now(UTC)
    token = secrets.token_hex(8)
    await _lock(repo, now, stale_after, token)
    ends = time.monotonic() + stale_after.total_seconds() * LEASE_SHARE
    try:
        report = GCReport()
        referenced: set[str] = set()
        for rp_id in await repo.restore_point_ids():
            try:
                rp = await repo.load(rp_id)
            except ManifestError as exc:
                raise RepoError(f"garbage collection stopped, nothing deleted: {exc}") from None
            referenced |= rp.chunk_ids()
            report.restore_points += 1
        report.chunks_referenced = len(referenced)
        async for info in repo.backend.list("chunks/"):
            if time.monotonic() >= ends:
                report.stopped_early = True
                return report
            report.chunks_seen += 1
            cid = info.key.rsplit("/", 1)[-1]
            if cid in referenced:
                report.bytes_kept += info.size
                continue
            if info.modified >= cutoff:
                report.chunks_spared_young += 1
                report.bytes_kept += info.size
                continue
            if not dry_run:
                # checked again at the moment of deleting: a backup may have started since the
                # listing and refreshed it (then it is kept); the backend makes it atomic
                freed = await repo.backend.delete_if_unused_since(info.key, cutoff)
                if freed is None:
                    report.chunks_spared_young += 1
                    continue
            report.chunks_removed += 1
            report.bytes_removed += info.size
            report.removed.append(cid)
        if not dry_run:
            report.leftovers_removed, report.chunks_put_back = await clean_leftovers(repo.backend, cutoff)
        return report
    finally:
        await _unlock(repo, token)


async def clean_leftovers(backend: Backend, cutoff: datetime) -> tuple[int, int]:
    """(removed, put back): see step 3 of the module's docstring."""
    if not isinstance(backend, HasLeftovers):
        return 0, 0
    removed = put_back = 0
    for info in await backend.leftovers():
        folder, name = posixpath.split(info.key)
        original = aside_original(name)
        if original is not None:
            if await backend.put_back(info.key, posixpath.join(folder, original) if folder else original):
                put_back += 1
            else:
                removed += 1
        elif info.modified < cutoff:
            await backend.delete(info.key)
            removed += 1
    return removed, put_back


async def _unlock(repo: Repository, token: str) -> None:
    try:
        held = json.loads(await repo.backend.get(LOCK_KEY))
    except (ObjectMissing, ValueError):
        return
    if isinstance(held, dict) and held.get("token") not in (token, None):
        return  # taken over (this GC overran its lease): the lock is the other GC's now
    await repo.backend.delete(LOCK_KEY)


async def _lock(repo: Repository, now: datetime, stale_after: timedelta, token: str) -> None:
    body = json.dumps({"since": now.isoformat(), "token": token}).encode()
    if await repo.backend.put_if_absent(LOCK_KEY, body, durable=True):
        return
    try:
        held = json.loads(await repo.backend.get(LOCK_KEY))
        since = datetime.fromisoformat(held["since"])
    except (ObjectMissing, ValueError, KeyError, TypeError):
        since = now - stale_after - timedelta(seconds=1)  # unreadable: treat as stale
    else:
        if held.get("token") == token:
            return  # ours: the PUT was retried after its answer was lost, and the retry found it
    if now - since <= stale_after:
        raise GCBusy(f"another garbage collection of {repo.backend.location} runs since {since.isoformat()}")
    await repo.backend.delete(LOCK_KEY)  # a GC that died: take over
    if not await repo.backend.put_if_absent(LOCK_KEY, body, durable=True):
        raise GCBusy(f"another garbage collection of {repo.backend.location} just started")
