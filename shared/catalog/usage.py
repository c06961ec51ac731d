"""Storage usage of repositories: what is used and free, logical against stored bytes, sizes per
VM and per job, daily samples for growth, and an alert when a repository's storage passes the
threshold (default 80%), once per crossing.

`stored` is the size of the chunk objects (what the repository holds on disk, before the file
system's own overhead); `logical` is the sum of the restore points' disk capacities (what a
restore of every point would write). Per VM and per job the figure is `bytes_stored` of their
restore points: the new data each backup added (shared chunks count once, for the backup that
first stored them). The file system's `total` and `free` come from the backend where it knows
them (local directories and NFS mounts do).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog.alerts import raise_alert
from shared.clock import iso
from shared.db.models import RestorePointRow
from shared.db.usage import UsageSample, UsageState
from shared.repo import RepoError, Repository
from shared.repo.locations import Credentials, opened


async def measure(location: str, credentials: Credentials) -> dict[str, int | None]:
    """Sizes of one repository: `stored` (chunk objects), `unique` (the plain bytes of the chunks
    its restore points use, each once), `referenced` (the non-zero windows of every restore
    point: what a restore reads from chunks), and the storage's `total` and `free`."""
    async with opened(location, credentials) as repo:
        return await _measure(repo)


async def _measure(repo: Repository) -> dict[str, int | None]:
    total, free = await repo.backend.usage()
    stored = 0
    chunks = 0
    async for info in repo.backend.list("chunks/"):
        stored += info.size
        chunks += 1
    plain: dict[str, int] = {}
    referenced = 0
    for rp_id in await repo.restore_point_ids():
        try:
            rp = await repo.load(rp_id)
        except RepoError:
            continue  # reported by verification; sizes are best effort
        for disk in rp.disks:
            for _offset, length, cid in disk.windows():
                if cid is not None:
                    plain[cid] = length
                    referenced += length
    return {
        "total": total, "free": free, "stored": stored, "chunks": chunks,
        "unique": sum(plain.values()), "referenced": referenced,
    }  # fmt: skip


def record(
    session: Session, location: str, measured: dict[str, int | None], threshold: float, now: datetime
) -> dict[str, Any]:
    """Store today's sample, raise an alert when the threshold is crossed upwards (once per
    crossing: the state resets when usage falls back below it); returns the repository's view."""
    rows = list(session.scalars(select(RestorePointRow).where(RestorePointRow.repository == location)))
    logical = sum(r.logical_bytes for r in rows)
    total, free, stored = measured["total"], measured["free"], int(measured["stored"] or 0)
    session.merge(
        UsageSample(
            repository=location, day=now.date(), total=total, free=free, stored=stored, logical=logical,
            unique_bytes=measured.get("unique"), referenced_bytes=measured.get("referenced"), sampled_at=now,
        )
    )  # fmt: skip
    percent = 100.0 * (total - free) / total if total and free is not None else None
    if percent is not None:
        state = session.get(UsageState, location)
        above = percent >= threshold
        if state is None:
            state = UsageState(repository=location, above=False, percent=percent, changed_at=now)
            session.add(state)
        if above and not state.above:
            raise_alert(
                session,
                key=f"usage:{location}:{now.isoformat()}",
                kind="storage_usage",
                severity="warning",
                message=(
                    f"repository {location} is {percent:.0f}% full (threshold {threshold:.0f}%): "
                    f"{_size((total or 0) - (free or 0))} used of {_size(total or 0)},"
                    f" {_size(free or 0)} free;"
                    " prune, garbage-collect or add space"
                ),
                now=now,
            )
            state.changed_at = now
        elif not above and state.above:
            state.changed_at = now
        state.above, state.percent = above, percent
    return _view(location, rows, total, free, stored, measured)


def view(session: Session, location: str) -> dict[str, Any]:
    """The repository's view from its latest stored sample (the verifier's, or a measurement
    asked for): nothing is measured, nothing written."""
    rows = list(session.scalars(select(RestorePointRow).where(RestorePointRow.repository == location)))
    query = select(UsageSample).where(UsageSample.repository == location).order_by(UsageSample.day.desc())
    latest = session.scalars(query.limit(1)).first()
    if latest is None:
        return {**_view(location, rows, None, None, None, {}), "sampled_at": None}
    ratios = {"unique": latest.unique_bytes, "referenced": latest.referenced_bytes}
    out = _view(location, rows, latest.total, latest.free, latest.stored, ratios)
    return {**out, "sampled_at": iso(latest.sampled_at)}


def listing(session: Session) -> list[dict[str, Any]]:
    """Every repository of the catalog with its daily samples, as of the latest sample (`GET
    /api/v1/repositories`, `vbm repo usage`)."""
    return [
        {**view(session, location), "samples": samples(session, location)} for location in locations(session)
    ]


def locations(session: Session) -> list[str]:
    """Every repository the catalog names (its restore points')."""
    return sorted(set(session.scalars(select(RestorePointRow.repository).distinct())))


def recorded(
    session: Session, location: str, measured: dict[str, int | None], threshold: float, now: datetime
) -> dict[str, Any]:
    """`record`, answered as a listed repository is (`POST /api/v1/repositories/measure`)."""
    info = record(session, location, measured, threshold, now)
    return {**info, "sampled_at": iso(now), "samples": samples(session, location)}


def _view(
    location: str,
    rows: list[RestorePointRow],
    total: int | None,
    free: int | None,
    stored: int | None,
    measured: dict[str, int | None],
) -> dict[str, Any]:
    logical = sum(r.logical_bytes for r in rows)
    percent = 100.0 * (total - free) / total if total and free is not None else None
    per_vm: dict[str, int] = defaultdict(int)
    per_job: dict[str, int] = defaultdict(int)
    for r in rows:
        per_vm[r.vm_name] += r.bytes_stored
        per_job[r.job_id or "-"] += r.bytes_stored
    return {
        "repository": location,
        "total": total,
        "free": free,
        "used_percent": None if percent is None else round(percent, 1),
        "stored": stored,
        "logical": logical,
        "reduction": round(logical / stored, 2) if stored else None,
        # deduplication: every restore point's data against the unique chunks it is made of;
        # compression: those unique chunks' plain bytes against what they take on storage
        "dedup_ratio": _ratio(measured.get("referenced"), measured.get("unique")),
        "compression_ratio": _ratio(measured.get("unique"), stored),
        "restore_points": len(rows),
        "per_vm": dict(per_vm),
        "per_job": dict(per_job),
    }


def samples(session: Session, location: str, days: int = 90) -> list[dict[str, Any]]:
    query = select(UsageSample).where(UsageSample.repository == location).order_by(UsageSample.day.desc())
    return [
        {"day": s.day.isoformat(), "total": s.total, "free": s.free, "stored": s.stored, "logical": s.logical}
        for s in session.scalars(query.limit(days))
    ]


def _ratio(a: int | None, b: int | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _size(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"
