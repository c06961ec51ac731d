"""Fakes for the unit tier: a vCenter in memory, the pool of them, the relay a handler kicks, a clock.

`FakeVCenter` has the methods of `shared.vsphere.VCenter` the handlers call, with the same
signatures (tests/unit/test_fakes.py checks that), and raises the same `VSphereError`s;
`FakeVCenters` turns them into `Retryable`/`Permanent` as `shared.vsphere.pool.VCenters` does.
A test queues faults per method (`vc.fail("create_snapshot", error)`), runs code at the moment
of a call (`vc.hooks["create_snapshot"] = ...`) and reads what was asked (`vc.calls`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from shared.notify.channels import NotifyError
from shared.runtime.bus import Permanent, Retryable
from shared.vsphere import DiskInfo, NotFound, SnapshotInfo, VMInfo, VSphereError

T = TypeVar("T")
GiB = 1 << 30


def disk(key: int = 2000, capacity: int = GiB, datastore: str = "ds1", **kw: Any) -> DiskInfo:
    label = kw.pop("label", f"Hard disk {key - 1999}")
    file = kw.pop("file", f"[{datastore}] vm/disk-{key}.vmdk")
    return DiskInfo(
        key=key, label=label, capacity=capacity, file=file, datastore=datastore, thin=True,
        change_id=kw.pop("change_id", None), **kw,
    )  # fmt: skip


@dataclass
class FakeVM:
    moref: str
    name: str
    power_state: str = "poweredOn"
    cbt_enabled: bool = True
    datacenter: str = "dc1"
    disks: list[DiskInfo] = field(default_factory=lambda: [disk()])
    snapshots: list[SnapshotInfo] = field(default_factory=list)
    datastores: tuple[str, ...] = ("ds1",)

    def info(self) -> VMInfo:
        return VMInfo(
            name=self.name, moref=self.moref, uuid=f"uuid-{self.moref}", power_state=self.power_state,
            cbt_enabled=self.cbt_enabled, vmx_path=f"[{self.datastores[0]}] {self.name}/{self.name}.vmx",
            datacenter=self.datacenter, disks=tuple(self.disks), snapshots=tuple(self.snapshots),
            datastores=self.datastores,
        )  # fmt: skip


class FakeVCenter:
    """One vCenter in memory: VMs, their snapshots, datastores' space, CBT."""

    def __init__(self, name: str = "vc1") -> None:
        self.name = name
        self.vms: dict[str, FakeVM] = {}
        self.space: dict[str, tuple[int, int]] = {"ds1": (1000 * GiB, 500 * GiB)}  # capacity, free
        self.calls: list[tuple[Any, ...]] = []
        self.faults: dict[str, list[VSphereError]] = {}
        self.hooks: dict[str, Callable[..., None]] = {}
        self.frozen: dict[str, list[DiskInfo]] = {}  # snapshot moref -> its disks
        self.closed = False
        self._made = 0
        self._lock = threading.Lock()

    # set-up
    def add_vm(self, moref: str = "vm-1", name: str | None = None, **kw: Any) -> FakeVM:
        vm = FakeVM(moref=moref, name=name or f"vm{moref.rsplit('-', 1)[-1]}", **kw)
        self.vms[moref] = vm
        return vm

    def fail(self, method: str, *errors: VSphereError) -> None:
        """The next calls of `method` raise these, in order; then it works again."""
        self.faults.setdefault(method, []).extend(errors)

    def asked(self, method: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == method]

    def _enter(self, method: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((method, *args))
        if method in self.hooks:
            self.hooks[method](*args)
        queued = self.faults.get(method)
        if queued:
            raise queued.pop(0)

    def _vm(self, moref: str) -> FakeVM:
        if moref not in self.vms:
            raise NotFound(f"VM {moref}")
        return self.vms[moref]

    # the VCenter methods the handlers call
    def vm(self, moref: str) -> VMInfo:
        self._enter("vm", moref)
        return self._vm(moref).info()

    def list_vms(self) -> list[VMInfo]:
        self._enter("list_vms")
        return [vm.info() for vm in self.vms.values()]

    def datastore_free(self, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        self._enter("datastore_free", names)
        return {n: self.space[n] for n in names if n in self.space}

    def set_cbt(self, moref: str, enabled: bool, *, timeout: float | None = None) -> None:
        self._enter("set_cbt", moref, enabled)
        self._vm(moref).cbt_enabled = enabled

    def create_snapshot(
        self,
        moref: str,
        name: str,
        *,
        description: str = "",
        quiesce: bool = False,
        memory: bool = False,
        timeout: float | None = None,
    ) -> SnapshotInfo:
        self._enter("create_snapshot", moref, name, quiesce)
        vm = self._vm(moref)
        with self._lock:
            self._made += 1
            snap = SnapshotInfo(
                name=name, moref=f"snapshot-{self._made}", created=None, description=description
            )
        vm.snapshots.append(snap)
        change = f"cid-{self._made}" if vm.cbt_enabled else None
        self.frozen[snap.moref] = [replace(d, change_id=change) for d in vm.disks]
        return snap

    def remove_snapshot(self, snapshot_moref: str, *, timeout: float | None = None) -> None:
        self._enter("remove_snapshot", snapshot_moref)
        for vm in self.vms.values():
            vm.snapshots = [s for s in vm.snapshots if s.moref != snapshot_moref]

    def snapshot_disks(self, snapshot_moref: str) -> list[DiskInfo]:
        self._enter("snapshot_disks", snapshot_moref)
        if snapshot_moref not in self.frozen:
            raise NotFound(f"snapshot {snapshot_moref}")
        return list(self.frozen[snapshot_moref])

    def changed_areas(
        self, vm_moref: str, snapshot_moref: str | None, disk_key: int, capacity: int, change_id: str
    ) -> list[tuple[int, int]]:
        self._enter("changed_areas", vm_moref, snapshot_moref, disk_key, change_id)
        return [(0, capacity)]

    def close(self) -> None:
        self.closed = True

    def snapshot_names(self, moref: str = "vm-1") -> list[str]:
        return [s.name for s in self.vms[moref].snapshots]


class FakeVCenters:
    """The pool (`shared.vsphere.pool.VCenters`) over fake vCenters: same calls, same errors."""

    def __init__(self, *vcenters: FakeVCenter) -> None:
        self.vcenters = {vc.name: vc for vc in vcenters}

    def get(self, name: str) -> FakeVCenter:
        if name not in self.vcenters:
            known = ", ".join(sorted(self.vcenters)) or "none"
            raise Permanent(f"vCenter {name!r} is not configured (configured: {known})")
        return self.vcenters[name]

    async def call(self, name: str, fn: Callable[[Any], T]) -> T:
        vc = self.get(name)
        try:
            return await asyncio.to_thread(fn, vc)
        except VSphereError as exc:
            if exc.retryable:
                raise Retryable(str(exc)) from exc
            raise Permanent(str(exc)) from exc

    def close(self) -> None:
        for vc in self.vcenters.values():
            vc.close()

    async def aclose(self) -> None:
        self.close()


class FakeRelay:
    """The outbox relay: the handlers kick it after a commit; the events stay in the outbox table."""

    def __init__(self) -> None:
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1


class FakeClock:
    """A clock that stands still until the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class Kicks:
    """A wake-up callable (the dispatcher's kick) that counts."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


class FakeSender:
    """Stands for `shared.notify.channels.send`: records each delivery; channels named in `down`
    fail with NotifyError as a channel that is down does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (channel, title)
        self.down: set[str] = set()

    async def __call__(self, channel: Any, message: Any, settings: Any) -> None:
        if channel.name in self.down:
            raise NotifyError(f"{channel.type} channel {channel.name!r}: HTTP 503")
        self.sent.append((channel.name, message.title))
