"""Checkpoints of a transfer in progress, so a redelivered transfer resumes instead of starting over.

While a disk is copied, the windows already stored are appended, about once a second, as
write-once objects `checkpoints/<task id>/<disk key>/<seq>` in the repository (JSON: the snapshot
and a list of [window index, chunk id or null]). A later attempt of the same task on the same
snapshot reads them back and skips those windows, after checking that each chunk exists (which
also marks it for the fsync before the manifest). Checkpoints are deleted once the restore point
is committed; leftovers are harmless and garbage collection removes them.
"""

from __future__ import annotations

import json
import logging

from shared.repo import RepoError, Repository

log = logging.getLogger(__name__)


class Checkpoint:
    def __init__(self, repo: Repository, task_id: str, disk_key: int, snapshot_moref: str) -> None:
        self.repo = repo
        self.prefix = f"checkpoints/{task_id}/{disk_key}/"
        self.snapshot = snapshot_moref
        self.pending: list[tuple[int, str | None]] = []
        self.seq = 0

    async def load(self) -> dict[int, str | None]:
        """Windows an earlier attempt on this snapshot stored (only chunks that still exist)."""
        known: dict[int, str | None] = {}
        async for info in self.repo.backend.list(self.prefix):
            self.seq = max(self.seq, int(info.key.rsplit("/", 1)[1]) + 1)
            try:
                data = json.loads(await self.repo.backend.get(info.key))
            except (RepoError, ValueError) as exc:
                log.warning("ignoring damaged checkpoint %s: %s", info.key, exc)
                continue
            if data.get("snapshot") == self.snapshot:
                known.update({int(i): cid for i, cid in data["windows"]})
        for index, cid in list(known.items()):
            if cid is not None and not await self.repo.has_chunk(cid):
                del known[index]
        return known

    def add(self, index: int, chunk_id: str | None) -> None:
        self.pending.append((index, chunk_id))

    async def save(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        body = json.dumps({"snapshot": self.snapshot, "windows": batch}).encode()
        await self.repo.backend.put_if_absent(f"{self.prefix}{self.seq:08d}", body)
        self.seq += 1

    async def clear(self) -> None:
        keys = [info.key async for info in self.repo.backend.list(self.prefix)]
        for key in keys:
            await self.repo.backend.delete(key)
