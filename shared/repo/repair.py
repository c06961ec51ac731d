"""Healing a repository from a replica: damaged or missing chunks replaced by good copies.

A chunk is taken from the replica only if it decodes there against its id (the same check every
read does), so a replica's damage is never copied back; the damaged object is removed and the
good one written in its place, then read back. Replication copies chunks as stored, so a
replica's chunk is byte-for-byte what the primary should hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from shared.repo import chunk as chunks
from shared.repo.backend import Backend
from shared.repo.errors import ChunkError, ObjectMissing
from shared.repo.repository import Repository, chunk_key


async def repair_from(
    repo: Repository, replica: Backend, chunk_ids: Iterable[str]
) -> tuple[list[str], dict[str, str]]:
    """(chunks repaired, chunk -> why it could not be) for each of `chunk_ids`."""
    repaired: list[str] = []
    failed: dict[str, str] = {}
    for cid in sorted(set(chunk_ids)):
        key = chunk_key(cid)
        try:
            stored = await replica.get(key)
        except ObjectMissing:
            failed[cid] = f"not in {replica.location} either"
            continue
        try:
            await asyncio.to_thread(chunks.decode, stored, cid)
        except ChunkError as exc:
            failed[cid] = f"damaged in {replica.location} too ({exc.problem})"
            continue
        await repo.backend.delete(key)
        await repo.backend.put_if_absent(key, stored, durable=True)
        try:
            await repo.get_chunk(cid)
        except ChunkError as exc:
            failed[cid] = f"written again but does not read back: {exc.problem}"
            continue
        repaired.append(cid)
    return repaired, failed
