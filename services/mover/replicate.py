"""Replication: copy a verified restore point to a secondary repository (3-2-1).

1. The target opens (or, empty, is initialized with the source's chunk size); its format must
   match the source's (chunk size, hash, compression), since chunks are copied as stored.
2. The manifest is loaded from the source (checksum). If the target holds it already, the copy
   is complete (manifests are written last).
3. Every chunk the restore point uses that the target lacks is read from the source as stored,
   checked (decoded against its id: a damaged source chunk is never spread), and written with
   put-if-absent; a few at a time, under the bandwidth limit (`replication.bandwidth_mbps`).
4. The target is flushed, then the manifest is written, durably: a reader of the target sees the
   restore point only when all its chunks are there.
5. Checked on the target: the manifest loads, every chunk is there, and the chunks sent now read
   back and decode to their ids.

Nothing is ever written twice (put-if-absent), and a copy cut short (the mover died, the target
refused) leaves only chunks, which the next attempt skips: a redelivery or a retry completes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from services.mover.deps import Deps
from shared.catalog import locations, replication
from shared.catalog.alerts import raise_alert
from shared.clock import aware
from shared.contracts import Event, ReplicateDone, ReplicateRequested
from shared.db.models import Replication, RestorePointRow
from shared.observe import metrics
from shared.repo import ObjectMissing, RepoError, Repository
from shared.repo import chunk as chunks
from shared.repo.digests import sums_key
from shared.repo.locations import (
    Credentials,
    CredentialsFor,
    credentials_at,
    open_backend,
    open_or_init,
    opened,
)
from shared.repo.repository import chunk_key, manifest_key
from shared.runtime.bus import Delivery
from shared.runtime.outbox import stage

log = logging.getLogger(__name__)
PARALLEL = 4


@dataclass
class Copied:
    chunks: int = 0
    bytes: int = 0
    present: int = 0


class Throttle:
    """At most `rate` bytes a second on average (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        self.sent += n
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def on_replicate_requested(
    event: ReplicateRequested, delivery: Delivery, deps: Deps
) -> Sequence[Event]:
    ctx = deps.ctx
    now = ctx.clock()
    alive = timedelta(seconds=ctx.settings.pipeline.ack_wait / 2)
    with ctx.sessions.begin() as s:
        rep = s.get(Replication, event.replication_id)
        if rep is None or rep.state in replication.FINAL:
            return []
        if rep.state == "running" and aware(rep.updated_at) > now - alive:
            return []  # another attempt is at it (a duplicate or re-sent request)
        row = s.get(RestorePointRow, rep.restore_point_id)
        if row is None:
            rep.state, rep.finished_at, rep.updated_at = "failed", now, now
            rep.error = "the restore point no longer exists (removed by retention before it was copied)"
            return []
        rep.state, rep.attempts, rep.updated_at, rep.error = "running", rep.attempts + 1, now, None
        source, target, attempt, vm_name = row.repository, rep.target, rep.attempts, row.vm_name
    copied = Copied()
    beat = asyncio.create_task(_heartbeat(deps, event.replication_id, copied))
    try:
        error = None
        try:
            await copy_point(
                source,
                target,
                event.restore_point_id,
                copied,
                locations.lookup(ctx.settings, ctx.sessions),
                ctx.settings.replication.bandwidth_mbps,
            )
        except (RepoError, OSError, ValueError) as exc:
            error = str(exc)
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
    now = ctx.clock()
    with ctx.sessions.begin() as s:
        rep = s.get(Replication, event.replication_id)
        if rep is None:
            return []
        rep.chunks_sent += copied.chunks
        rep.bytes_sent += copied.bytes
        rep.updated_at = now
        if error is None:
            rep.state, rep.finished_at, rep.next_try_at = "done", now, None
        elif rep.attempts >= replication.MAX_ATTEMPTS:
            rep.state, rep.error, rep.finished_at = "failed", error, now
        else:
            rep.state, rep.error, rep.next_try_at = "pending", error, replication.retry_at(rep.attempts, now)
        if error is not None:
            again = (
                "gave up" if rep.state == "failed"
                else f"tried again at {rep.next_try_at:%Y-%m-%d %H:%M} UTC"
            )  # fmt: skip
            raise_alert(
                s,
                key=f"replication:{rep.id}:{attempt}",
                kind="replication_failed",
                severity="error",
                message=(
                    f"restore point {rep.restore_point_id} of {vm_name} could not be copied to {target}"
                    f" (attempt {attempt} of {replication.MAX_ATTEMPTS}, {again}): {error}."
                    " The backup itself is fine."
                ),
                now=now,
                vm_name=vm_name,
            )
        stage(
            s,
            ReplicateDone(
                occurred_at=now, replication_id=rep.id, restore_point_id=rep.restore_point_id, target=target,
                ok=error is None, chunks_sent=rep.chunks_sent, bytes_sent=rep.bytes_sent, error=error,
            ),
            now,
        )  # fmt: skip
    ctx.relay.kick()
    metrics.REPLICATION_COPIED.labels(repository=source, target=target).inc(copied.bytes)
    if error is not None:
        metrics.REPLICATION_FAILURES.labels(repository=source, target=target).inc()
    log.info(
        "replication of %s to %s: %s (%d chunks, %d bytes sent now; %d there already)",
        event.restore_point_id, target, "done" if error is None else f"failed: {error}",
        copied.chunks, copied.bytes, copied.present,
    )  # fmt: skip
    return []


async def _heartbeat(deps: Deps, replication_id: str, copied: Copied) -> None:
    """Every second: this attempt is alive (a request that finds it fresh is a duplicate)."""
    while True:
        await asyncio.sleep(1.0)

        def touch() -> None:
            with deps.ctx.sessions.begin() as s:
                rep = s.get(Replication, replication_id)
                if rep is not None and rep.state == "running":
                    rep.updated_at = deps.ctx.clock()

        await asyncio.to_thread(touch)


async def copy_point(
    source: str,
    target: str,
    rp_id: str,
    copied: Copied,
    credentials: Credentials | CredentialsFor,
    bandwidth_mbps: float = 0,
) -> None:
    """Copy restore point `rp_id` from `source` to `target` (see the module's docstring), each
    opened with its credentials (one set for both, or looked up per location)."""
    async with opened(source, credentials_at(credentials, source)) as src:
        await _copy(src, source, target, rp_id, copied, credentials, bandwidth_mbps)


async def _copy(
    src: Repository,
    source: str,
    target: str,
    rp_id: str,
    copied: Copied,
    credentials: Credentials | CredentialsFor,
    bandwidth_mbps: float,
) -> None:
    backend = open_backend(target, credentials_at(credentials, target))
    try:
        dst = await open_or_init(backend, chunk_size=src.chunk_size)
        mine, theirs = src.config, dst.config
        if (mine.chunk_size, mine.hash, mine.compression) != (
            theirs.chunk_size,
            theirs.hash,
            theirs.compression,
        ):
            raise RepoError(
                f"secondary repository {target} stores chunks of {theirs.chunk_size} bytes ({theirs.hash},"
                f" {theirs.compression}), the source {mine.chunk_size} ({mine.hash}, {mine.compression}):"
                " a secondary repository needs the same format; use an empty location"
            )
        rp = await src.load(rp_id)
        # A manifest there already (an earlier attempt got that far) is not taken as proof: every
        # chunk is still looked for below, and what is missing is sent.
        throttle = Throttle(bandwidth_mbps * 125_000)
        sent: list[str] = []
        queue = sorted(rp.chunk_ids())
        pending = iter(queue)

        async def worker() -> None:
            for cid in pending:
                key = chunk_key(cid)
                if await backend.exists(key):
                    copied.present += 1
                    continue
                try:
                    stored = await src.backend.get(key)
                except ObjectMissing:
                    raise RepoError(
                        f"chunk {cid} of {rp_id} is missing in {source}: verify the source"
                    ) from None
                await asyncio.to_thread(chunks.decode, stored, cid)  # never spread a damaged chunk
                await throttle.take(len(stored))
                if await backend.put_if_absent(key, stored):
                    copied.chunks += 1
                    copied.bytes += len(stored)
                    sent.append(cid)

        await asyncio.gather(*(worker() for _ in range(PARALLEL)))
        if getattr(backend, "immutable_days", 0) and not await backend.exists(manifest_key(rp_id)):
            # an immutable secondary keeps the copy for its own period: every chunk and its
            # config retained, the manifest saying until when (the primary's date is not its)
            await dst.commit(rp)
        else:
            await backend.flush()
            await backend.put_if_absent(
                manifest_key(rp_id), await src.backend.get(manifest_key(rp_id)), durable=True
            )
        try:  # the SHA-256 of its disks, next to the manifest, when the source has it
            sums = await src.backend.get(sums_key(rp_id))
        except ObjectMissing:
            pass
        else:
            await backend.put_if_absent(sums_key(rp_id), sums, durable=True)
        # checked on the target: the manifest loads, every chunk is there, the new ones decode
        await dst.load(rp_id)
        for cid in queue:
            if not await backend.exists(chunk_key(cid)):
                raise RepoError(f"chunk {cid} of {rp_id} is not in {target} after the copy")
        for cid in sent:
            await dst.get_chunk(cid, rp_id)
    finally:
        await backend.close()
