"""Scheduled re-verification: bit rot is found before a restore needs the data.

Every repository in the catalog is re-read in rounds. A round is `round_cycles` cycles, one every
`cycle_seconds` (defaults: 30 cycles, one a day); cycle k reads the chunks whose id falls in
slice k of the id space (`shared.repo.check`, exact integer slices), so a round reads every
referenced chunk exactly once while each day's reading stays a fraction of the repository (as
restic's `--read-data-subset`). Every cycle also loads every manifest (checksums) and checks that
every referenced chunk exists.

A damaged or missing chunk marks each restore point that uses it as failed at once, naming the
chunk, and raises an alert naming those restore points. When a round ends, every restore point
that existed when it began and had no damage is marked verified ("scheduled") at that time.

One verifier instance runs a cycle: the round row is claimed with a compare-and-set on its
`last_cycle_at`, so several verifiers do not read the same slice twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update

from services.verifier.handlers import Deps, record
from shared.catalog import audit
from shared.catalog import locations as locstore
from shared.catalog.alerts import raise_alert
from shared.db.models import RestorePointRow, VerifyRound
from shared.model.audit import system
from shared.repo import RepoError
from shared.repo.check import CheckReport, check
from shared.repo.locations import Credentials, opened
from shared.runtime.service import Context

log = logging.getLogger(__name__)


def repositories(ctx: Context, copies: bool = False) -> list[str]:
    """The catalog's repositories; with `copies` the secondaries too (collected and measured,
    not re-read on schedule: an off-site read costs egress)."""
    from shared.catalog import prune

    with ctx.sessions() as s:
        return prune.repositories(s, copies)


def claim(ctx: Context, location: str, now: datetime) -> tuple[int, int, datetime] | None:
    """(slice, slices, round start) of the next cycle of `location`, or None if it is not due."""
    cycle = timedelta(seconds=ctx.settings.verify.cycle_seconds)
    with ctx.sessions.begin() as s:
        rnd = s.get(VerifyRound, location)
        if rnd is None:
            s.add(
                VerifyRound(
                    repository=location,
                    slices=ctx.settings.verify.round_cycles,
                    next_slice=0,
                    round_started_at=now,
                    last_cycle_at=now,
                    damaged=[],
                )
            )
            return 0, ctx.settings.verify.round_cycles, now
        last = rnd.last_cycle_at
        if last is not None and now - last < cycle * 0.95:
            return None
        same = VerifyRound.last_cycle_at.is_(None) if last is None else VerifyRound.last_cycle_at == last
        result = s.execute(
            update(VerifyRound).where(VerifyRound.repository == location, same).values(last_cycle_at=now)
        )
        won = result.rowcount  # type: ignore[attr-defined]
        if won != 1:
            return None  # another verifier took this cycle
        return rnd.next_slice, rnd.slices, rnd.round_started_at


async def cycle(deps: Deps, location: str) -> CheckReport | None:
    """One cycle of one repository, if it is due; the report of what was read."""
    ctx = deps.ctx
    now = ctx.clock()
    claimed = await asyncio.to_thread(claim, ctx, location, now)
    if claimed is None:
        return None
    k, n, started = claimed
    try:
        async with opened(location, _credentials(ctx, location)) as repo:
            report = await check(repo, part=(k, n))
    except (RepoError, OSError) as exc:
        with ctx.sessions.begin() as s:
            raise_alert(
                s,
                key=f"reverify-unreadable:{location}:{now.date()}",
                kind="verify_failed",
                severity="error",
                message=f"scheduled verification could not read repository {location}: {exc}",
                now=now,
            )
        ctx.relay.kick()
        return None
    await asyncio.to_thread(_settle, ctx, location, report, (k, n, started), now)
    ctx.relay.kick()
    log.info(
        "re-verify %s: slice %d/%d, %d chunks read, %d damaged",
        location, k + 1, n, report.chunks_read, len(report.damaged_chunks),
    )  # fmt: skip
    return report


def _settle(
    ctx: Context, location: str, report: CheckReport, where: tuple[int, int, datetime], now: datetime
) -> None:
    k, n, started = where
    with ctx.sessions.begin() as s:
        rnd = s.get(VerifyRound, location)
        assert rnd is not None
        damaged = set(rnd.damaged) | set(report.damaged_restore_points)
        names: list[str] = []
        for rp_id, problems in sorted(report.damaged_restore_points.items()):
            row = s.get(RestorePointRow, rp_id)
            if row is None:
                continue  # in the repository, not in the catalog (e.g. from a fenced mover)
            record(row, problems, list(row.verify_notes or []), "scheduled", now)
            names.append(f"{rp_id} ({row.vm_name})")
        if names:
            raise_alert(
                s,
                key=f"reverify:{location}:{started.isoformat()}:{k}",
                kind="verify_failed",
                severity="error",
                message=(
                    f"scheduled verification of {location} (slice {k + 1} of {n}) found damaged data in"
                    f" {len(names)} restore point(s): {', '.join(names)};"
                    f" first problem: {report.damaged_restore_points[names[0].split(' ')[0]][0]}"
                ),
                now=now,
            )
        if k + 1 >= n:  # the round is complete: everything older than its start was read
            rows = s.scalars(
                select(RestorePointRow).where(
                    RestorePointRow.repository == location, RestorePointRow.finished_at <= started
                )
            )
            for row in rows:
                if row.id not in damaged:
                    record(row, [], list(row.verify_notes or []), "scheduled", now)
            rnd.next_slice, rnd.round_started_at, rnd.damaged = 0, now, []
            rnd.slices = ctx.settings.verify.round_cycles  # a changed setting applies from a new round
        else:
            rnd.next_slice, rnd.damaged = k + 1, sorted(damaged)


async def reverify_loop(deps: Deps) -> None:
    """The verifier's background task: a cycle for every repository whenever one is due."""
    ctx = deps.ctx
    if not ctx.settings.verify.reverify:
        return
    tick = min(60.0, ctx.settings.verify.cycle_seconds / 4)
    while not ctx.stop.is_set():
        try:
            for location in await asyncio.to_thread(repositories, ctx):
                if ctx.stop.is_set():
                    break
                await cycle(deps, location)
        except Exception:
            log.exception("re-verification cycle failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), tick)


async def gc_loop(deps: Deps) -> None:
    """The verifier's scheduled garbage collection: each repository every `verify.gc_seconds`
    (a GC already running elsewhere, GCBusy, is skipped until the next time)."""
    from shared.catalog import prune
    from shared.repo.gc import GCBusy

    ctx = deps.ctx
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), ctx.settings.verify.gc_seconds)
        if ctx.stop.is_set():
            return
        for location in await asyncio.to_thread(repositories, ctx, True):
            try:
                report = await prune.collect_garbage(
                    ctx.sessions, location, _credentials(ctx, location), ctx.clock()
                )
            except GCBusy as exc:
                log.info("scheduled GC skipped: %s", exc)
                continue
            except (RepoError, OSError) as exc:
                log.error("scheduled GC of %s failed: %s", location, exc)
                await asyncio.to_thread(_audit_gc, ctx, location, {}, f"error: {exc}")
                continue
            figures = {
                "chunks_removed": report.chunks_removed, "bytes_removed": report.bytes_removed,
                "leftovers_removed": report.leftovers_removed, "chunks_put_back": report.chunks_put_back,
                "stopped_early": report.stopped_early,
            }  # fmt: skip
            await asyncio.to_thread(_audit_gc, ctx, location, figures, "ok")
            log.info(
                "GC %s: freed %d chunks (%d bytes), %d spared as recent, %d leftovers removed, %d put back%s",
                location, report.chunks_removed, report.bytes_removed, report.chunks_spared_young,
                report.leftovers_removed, report.chunks_put_back,
                "; stopped early (its time was up): the next GC goes on" if report.stopped_early else "",
            )  # fmt: skip


def _audit_gc(ctx: Context, location: str, figures: dict[str, object], result: str) -> None:
    audit.try_append(
        ctx.sessions, actor=system(ctx.service), action="gc", target=f"repository:{location}",
        params=figures, result=result,
    )  # fmt: skip


def _credentials(ctx: Context, location: str) -> Credentials:
    return locstore.lookup(ctx.settings, ctx.sessions)(location)


async def usage_loop(deps: Deps) -> None:
    """The verifier's other background task: sample every repository's storage, alert at the
    threshold (shared/catalog/usage.py)."""
    from shared.catalog import usage

    ctx = deps.ctx
    while not ctx.stop.is_set():
        try:
            locations = set(await asyncio.to_thread(repositories, ctx, True)) | {
                ctx.settings.repository_location
            }
            for location in sorted(locations):
                try:
                    measured = await usage.measure(location, _credentials(ctx, location))
                except (RepoError, OSError):
                    continue  # not a repository (yet): the first backup makes it
                now = ctx.clock()

                await asyncio.to_thread(_store_usage, ctx, location, measured, now)
            ctx.relay.kick()
        except Exception:
            log.exception("storage usage sampling failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), ctx.settings.verify.usage_seconds)


def _store_usage(ctx: Context, location: str, measured: dict[str, int | None], now: datetime) -> None:
    from shared.catalog import usage

    with ctx.sessions.begin() as s:
        usage.record(s, location, measured, ctx.settings.verify.usage_alert_percent, now)
