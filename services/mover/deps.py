"""The mover's dependencies: the vCenter pool, one datastore HTTP client per vCenter, one writer per
repository (opened, or initialized when empty, on first use), the local stream budget."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.mover.streams import Latency, LocalStreams
from shared.repo import LocalBackend, NotARepository, Repository, Writer
from shared.repo.locations import Credentials, open_backend
from shared.runtime.service import Context
from shared.vsphere.datastore import DatastoreHTTP
from shared.vsphere.pool import VCenters


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
                    empty = await asyncio.to_thread(empty_or_missing, location)
                else:  # an object store: no object under the location's prefix
                    empty = not [o async for o in first(backend.list(""))]
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


def empty_or_missing(location: str) -> bool:
    if os.path.isdir(location) and os.listdir(location):
        return False
    os.makedirs(location, exist_ok=True)
    return True


async def first(objects: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for obj in objects:
        yield obj
        return
