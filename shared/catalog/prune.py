"""Pruning restore points by retention, and garbage collection, over the catalog and repositories.

A prune group is one VM's restore points of one job in one repository (a VM backed up by two
jobs has two groups); a VM is its vCenter and its moref (morefs repeat across vCenters). Its
policy is the job's retention, or the global default (`settings.retention`) when the job sets
none. `preview` decides every point of every group
(keep or remove, and the rule); `apply` removes what the preview removes: each point's manifest
first (`Repository.forget`), then its catalog row, then a `pruned` log row; a crash in between
leaves a catalog row whose manifest is gone, which the next prune removes. A point whose manifest
is still immutable (S3 Object Lock) is kept, catalog row and all, until a prune after that date.
Chunks are reclaimed by garbage collection (`shared/repo/gc.py`), with the cut-off `gc_cutoff`
gives: five minutes before the oldest backup still running (or before now).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog import locations
from shared.catalog.restores import FINAL as RESTORE_FINAL
from shared.catalog.tasks import FINAL as TASK_FINAL
from shared.clock import aware, iso
from shared.db.models import Job, Pruned, Replication, Restore, RestorePointRow, Task
from shared.model.retention import Decision, Point, Policy, expiries, plan
from shared.model.schedules import NeverFires, Schedule
from shared.observe.metrics import GC_FREED_BYTES
from shared.repo.errors import NotARepository, ObjectLocked, RepoError
from shared.repo.gc import GCBusy, collect
from shared.repo.locations import Credentials, CredentialsFor, credentials_at, opened
from shared.settings import Settings

GC_MARGIN = timedelta(minutes=5)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    repository: str
    job_id: str | None
    vcenter: str
    vm_moref: str


def policy_for(job: Job | None, settings: Settings) -> Policy:
    own = Policy.model_validate(job.retention or {}) if job is not None else Policy()
    return settings.retention if own.empty() else own


def preview(
    session: Session,
    settings: Settings,
    now: datetime,
    *,
    job_id: str | None = None,
    vm: str | None = None,
    policy: Policy | None = None,
) -> list[tuple[RestorePointRow, Decision, Policy]]:
    """Every restore point (of a job, a VM, or all) with the decision retention makes now; with
    `policy`, the decision that policy would make instead (the job form's preview)."""
    query = select(RestorePointRow)
    if job_id:
        query = query.where(RestorePointRow.job_id == job_id)
    if vm:
        query = query.where((RestorePointRow.vm_name == vm) | (RestorePointRow.vm_moref == vm))
    rows = list(session.scalars(query))
    reading = {
        r.restore_point_id
        for r in session.scalars(select(Restore).where(Restore.state.not_in(RESTORE_FINAL)))
    }
    groups: dict[Group, list[RestorePointRow]] = defaultdict(list)
    for row in rows:
        groups[Group(row.repository, row.job_id, row.vcenter, row.vm_moref)].append(row)
    out: list[tuple[RestorePointRow, Decision, Policy]] = []
    for group, members in groups.items():
        rules = policy or policy_for(session.get(Job, group.job_id) if group.job_id else None, settings)
        points = [
            Point(r.id, aware(r.finished_at), verified_ok=r.verify_state == "ok", pinned=r.pinned,
                  in_use=r.id in reading)
            for r in members
        ]  # fmt: skip
        by_id = {r.id: r for r in members}
        out += [(by_id[d.id], d, rules) for d in plan(points, rules, now)]
    return out


def future_backups(
    job: Job | None, last: datetime, now: datetime, horizon_days: int = 3 * 366
) -> list[datetime]:
    """When the job is expected to back up next: its schedule's slots, else daily (manual jobs)."""

    end = now + timedelta(days=horizon_days)
    out: list[datetime] = []
    try:
        schedule = Schedule.model_validate(job.schedule) if job is not None and job.schedule else None
    except ValidationError:  # stored before vbm refused it (e.g. a cron that never fires): no runs
        return out
    t = max(now, last)
    while len(out) < 2000:
        try:
            t = schedule.next_slot(t) if schedule is not None else t + timedelta(days=1)
        except NeverFires:
            break
        if t > end:
            break
        out.append(t)
    return out


def with_expiry(
    session: Session, settings: Settings, now: datetime, *, job_id: str | None = None, vm: str | None = None
) -> list[dict[str, Any]]:
    """The preview, with `expires_at` for kept points: when retention is expected to let each one
    go if the job keeps backing up on schedule (the jobs dashboard's retention countdown)."""
    decided = preview(session, settings, now, job_id=job_id, vm=vm)
    groups: dict[Group, list[tuple[RestorePointRow, Decision, Policy]]] = defaultdict(list)
    for row, d, policy in decided:
        groups[Group(row.repository, row.job_id, row.vcenter, row.vm_moref)].append((row, d, policy))
    out: list[dict[str, Any]] = []
    for group, members in groups.items():
        policy = members[0][2]
        kept = [(r, d) for r, d, _ in members if d.keep]
        points = [
            Point(r.id, aware(r.finished_at), verified_ok=r.verify_state == "ok", pinned=r.pinned)
            for r, _ in kept
        ]
        job = session.get(Job, group.job_id) if group.job_id else None
        last = max((p.time for p in points), default=now)
        when = expiries(points, policy, now, future_backups(job, last, now))
        for r, d, _ in members:
            item = view(r, d)
            expiry = when.get(r.id) if d.keep else now
            item["expires_at"] = iso(expiry)
            out.append(item)
    return out


def view(row: RestorePointRow, decision: Decision) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_id": row.job_id,
        "vm_name": row.vm_name,
        "finished_at": iso(row.finished_at),
        "verify_state": row.verify_state,
        "pinned": row.pinned,
        "action": "keep" if decision.keep else "remove",
        "rule": decision.reason,
    }


def removals(
    session: Session, settings: Settings, now: datetime, *, job_id: str | None = None, vm: str | None = None
) -> list[tuple[str, str, str]]:
    """(restore point, repository, rule) of every point retention removes now; a point still
    being copied to a secondary repository waits (replication reads it)."""

    decided = preview(session, settings, now, job_id=job_id, vm=vm)
    copying = set(
        session.scalars(
            select(Replication.restore_point_id).where(Replication.state.in_(("pending", "running")))
        )
    )
    return [
        (row.id, row.repository, d.reason) for row, d, _ in decided if not d.keep and row.id not in copying
    ]


def record_pruned(session: Session, rp_id: str, reason: str, now: datetime) -> None:
    """Drop the catalog row of a restore point whose manifest is gone, and log it."""
    row = session.get(RestorePointRow, rp_id)
    if row is None:
        return
    session.merge(
        Pruned(
            id=row.id, job_id=row.job_id, vm_name=row.vm_name, repository=row.repository,
            finished_at=row.finished_at, pruned_at=now, reason=reason,
        )
    )  # fmt: skip
    session.delete(row)


def repositories(session: Session, copies: bool = True) -> list[str]:
    """Every repository the catalog names; with `copies`, also the secondaries copies went to."""

    found = set(session.scalars(select(RestorePointRow.repository).distinct()))
    if copies:
        found |= set(session.scalars(select(Replication.target).distinct()))
    return sorted(found)


def gc_cutoff(session: Session, now: datetime) -> datetime:
    """Five minutes before the oldest backup task or copy to a secondary still running (or now)."""

    running = list(session.scalars(select(Task.created_at).where(Task.state.not_in(TASK_FINAL))))
    running += session.scalars(
        select(Replication.created_at).where(Replication.state.in_(("pending", "running")))
    )
    oldest = min([now, *(aware(t) for t in running)])
    return oldest - GC_MARGIN


async def apply(
    sessions: Any, settings: Settings, now: datetime, *, job_id: str | None = None, vm: str | None = None
) -> list[tuple[str, str]]:
    """Remove what retention removes now; returns (restore point, rule) of each one removed."""

    def decide() -> list[tuple[str, str, str]]:
        with sessions() as s:
            return removals(s, settings, now, job_id=job_id, vm=vm)

    done: list[tuple[str, str]] = []
    credentials = locations.lookup(settings, sessions)
    for rp_id, location, reason in await asyncio.to_thread(decide):
        try:
            async with opened(location, credentials(location)) as repo:
                await repo.forget(rp_id)
        except ObjectLocked as exc:
            # immutable still (Object Lock): kept, catalog included; a later prune removes it
            log.info("restore point %s is due for removal (%s) and kept: %s", rp_id, reason, exc)
            continue
        except (RepoError, OSError) as exc:  # one repository that cannot be reached stops nothing else
            log.warning("restore point %s is due for removal (%s) and kept for now: %s", rp_id, reason, exc)
            continue

        def record(rp_id: str = rp_id, reason: str = reason) -> None:
            with sessions.begin() as s:
                record_pruned(s, rp_id, reason, now)

        await asyncio.to_thread(record)
        done.append((rp_id, reason))
    await forget_copies(sessions, credentials)
    return done


async def forget_copies(sessions: Any, credentials: Credentials | CredentialsFor) -> list[tuple[str, str]]:
    """Copies follow their restore point: a copy (replication row) whose point left the catalog
    is removed from its secondary repository, then its row; a copy still immutable there stays
    for a later prune, a secondary that cannot be reached too. Returns (restore point, target)
    of each copy removed."""

    def orphans() -> list[tuple[str, str, str, str]]:
        with sessions() as s:
            listed = set(s.scalars(select(RestorePointRow.id)))
            rows = s.scalars(select(Replication).where(Replication.state.in_(("done", "failed"))))
            return [
                (r.id, r.restore_point_id, r.target, r.state)
                for r in rows
                if r.restore_point_id not in listed
            ]

    removed: list[tuple[str, str]] = []
    for rep_id, rp_id, target, _state in await asyncio.to_thread(orphans):
        # a failed copy may have got as far as its manifest: removed too (a no-op when absent)
        try:
            try:
                async with opened(target, credentials_at(credentials, target)) as repo:
                    await repo.forget(rp_id)
            except NotARepository:  # a first copy that failed before it made the repository
                pass
        except ObjectLocked as exc:
            log.info("the copy of %s in %s is due for removal and kept: %s", rp_id, target, exc)
            continue
        except (RepoError, OSError) as exc:
            log.warning(
                "the copy of %s in %s could not be removed (next prune retries): %s", rp_id, target, exc
            )
            continue

        def drop(rep_id: str = rep_id) -> None:
            with sessions.begin() as s:
                row = s.get(Replication, rep_id)
                if row is not None:
                    s.delete(row)

        await asyncio.to_thread(drop)
        removed.append((rp_id, target))
    return removed


async def collect_garbage(
    sessions: Any, location: str, credentials: Credentials, now: datetime, *, dry_run: bool = False
) -> Any:
    """GC of one repository with the cut-off of the oldest running backup (see gc_cutoff)."""

    async with opened(location, credentials) as repo:
        # an object store refreshes a reused chunk only when it is older than its refresh_after:
        # the cut-off moves back by that much more, so a refreshed-then-reused chunk is never taken
        extra: timedelta = getattr(repo.backend, "refresh_after", timedelta(0))

        probe = getattr(repo.backend, "probe_refreshes", None)
        refreshes = await probe() if probe is not None else True

        def cutoff() -> datetime:

            with sessions() as s:
                writing = (
                    s.scalars(select(Task.id).where(Task.state.not_in(TASK_FINAL))).first()
                    or s.scalars(
                        select(Replication.id).where(Replication.state.in_(("pending", "running")))
                    ).first()
                )
                if not refreshes and writing:
                    raise GCBusy(
                        f"{location} cannot mark the chunks a running backup or copy reuses (its provider"
                        " keeps no settable modification times): it is collected when none runs; try later"
                    )
                return gc_cutoff(s, now) - extra

        report = await collect(repo, cutoff=await asyncio.to_thread(cutoff), now=now, dry_run=dry_run)
    if not dry_run:
        GC_FREED_BYTES.labels(repository=location).inc(report.bytes_removed)
    return report


def gc_view(location: str, report: Any, dry_run: bool) -> dict[str, Any]:
    """One repository's GC report (shared/repo/gc.py: GCReport), as `POST /api/v1/gc` and
    `vbm gc --json` give it."""
    return {
        "repository": location,
        "restore_points": report.restore_points,
        "chunks_referenced": report.chunks_referenced,
        "chunks_removed": report.chunks_removed,
        "bytes_removed": report.bytes_removed,
        "chunks_spared_young": report.chunks_spared_young,
        "leftovers_removed": report.leftovers_removed,
        "chunks_put_back": report.chunks_put_back,
        "stopped_early": report.stopped_early,
        "dry_run": dry_run,
    }
