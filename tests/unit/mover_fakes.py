"""Fakes the mover needs beyond tests/unit/fakes.py: the datastore HTTP client (disks and small
files in memory), the bus's live side (cancel subscription, progress), and a vCenter that can
remove what a restore made."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shared.vsphere.datastore import DownloadError
from tests.unit.fakes import FakeVCenter


class FakeDisk:
    """A flat disk image in memory, read as `shared.vsphere.datastore.DatastoreDisk` is."""

    def __init__(self, store: FakeDatastore, path: str, data: bytes) -> None:
        self.store = store
        self.path = path
        self.data = data
        self.received = 0

    async def read(self, offset: int, length: int) -> bytes:
        await self.store.enter(self.path, offset)
        self.received += length
        return self.data[offset : offset + length]

    async def read_into(self, offset: int, buf: memoryview) -> None:
        buf[:] = await self.read(offset, len(buf))


class FakeDatastore:
    """Stands for `DatastoreHTTP`: `disks` holds flat images by '<ds>/<path>', `files` the small
    files; `fault` raises a DownloadError at the next read, `on_read` runs at each read."""

    def __init__(self) -> None:
        self.disks: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        self.reads: list[tuple[str, int]] = []
        self.fault: DownloadError | None = None
        self.on_read: Callable[[], Awaitable[None]] | None = None
        self.closed = False

    async def enter(self, path: str, offset: int) -> None:
        self.reads.append((path, offset))
        if self.on_read is not None:
            await self.on_read()
        if self.fault is not None:
            raise self.fault

    def disk(self, datacenter: str, datastore: str, path: str, capacity: int) -> FakeDisk:
        key = f"{datastore}/{path}"
        return FakeDisk(self, key, self.disks.get(key, bytes(capacity)))

    async def get_file(self, datacenter: str, datastore: str, path: str) -> bytes | None:
        return self.files.get(f"{datastore}/{path}")

    async def close(self) -> None:
        self.closed = True


class FakeSubscription:
    def __init__(self, bus: FakeBus, subject: str) -> None:
        self.bus, self.subject = bus, subject

    async def unsubscribe(self) -> None:
        self.bus.subscribers.pop(self.subject, None)


class FakeBus:
    """The bus's live side as the mover's tracker uses it: `nc.subscribe` and `publish_live`."""

    def __init__(self) -> None:
        self.nc = self
        self.subscribers: dict[str, Callable[[Any], Awaitable[None]]] = {}
        self.live: list[tuple[str, Any]] = []

    async def subscribe(self, subject: str, cb: Callable[[Any], Awaitable[None]]) -> FakeSubscription:
        self.subscribers[subject] = cb
        return FakeSubscription(self, subject)

    async def publish_live(self, subject: str, payload: Any) -> None:
        self.live.append((subject, payload))


class MoverVCenter(FakeVCenter):
    """A fake vCenter whose CBT answers what the test says changed (`changed`, by disk key: else
    the whole disk), and that removes VMs and datastore paths (a restore's clean-up)."""

    def __init__(self, name: str = "vc1") -> None:
        super().__init__(name)
        self.changed: dict[int, list[tuple[int, int]]] = {}

    def changed_areas(
        self, vm_moref: str, snapshot_moref: str | None, disk_key: int, capacity: int, change_id: str
    ) -> list[tuple[int, int]]:
        whole = super().changed_areas(vm_moref, snapshot_moref, disk_key, capacity, change_id)
        return self.changed.get(disk_key, whole) if change_id != "*" else whole

    def destroy_vm(self, moref: str, *, timeout: float | None = None) -> None:
        self._enter("destroy_vm", moref)
        self.vms.pop(moref, None)

    def delete_path(self, datacenter: str, path: str, *, timeout: float | None = None) -> None:
        self._enter("delete_path", datacenter, path)
