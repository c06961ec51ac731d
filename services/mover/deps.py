"""The mover's dependencies: the vCenter pool, one datastore HTTP client per vCenter, one writer per
repository (opened, or initialized when empty, on first use), the local stream budget."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.mover.streams import Latency, LocalStreams
from shared.catalog import locations
from shared.repo import Writer
from shared.repo.locations import open_backend, open_or_init
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
            credentials = locations.lookup(self.ctx.settings, self.ctx.sessions)(location)
            backend = open_backend(location, credentials)
            try:
                repo = await open_or_init(backend)  # the first backup to an empty location makes it
            except BaseException:
                await backend.close()
                raise
            workers = self.ctx.settings.pipeline.workers or None
            self.writers[location] = Writer(repo, workers=workers) if workers else Writer(repo)
        return self.writers[location]

    async def close(self) -> None:
        for client in self.http.values():
            await client.close()
        for writer in self.writers.values():
            writer.close()
            await writer.repo.backend.close()
