"""The plain dataclasses the adapter hands out (nothing `vim.*` leaves it), and the readers
that build them from vSphere's objects."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyVmomi import vim


@dataclass(frozen=True)
class DiskInfo:
    key: int
    label: str
    capacity: int
    file: str  # "[datastore] vm/vm.vmdk", the descriptor of this disk in this config
    datastore: str
    thin: bool
    change_id: str | None
    uuid: str | None = None  # backing.uuid, e.g. "6000C29b-...": the WWN a guest sees it by
    mode: str = "persistent"  # backing.diskMode: independent_* disks are left out of snapshots
    kind: str = "flat"  # "flat", or "rdm-physical"/"rdm-virtual" for a raw device mapping

    @property
    def unreadable(self) -> str | None:
        """Why a backup cannot take this disk from a snapshot, or None."""
        if self.kind.startswith("rdm"):
            mode = self.kind.split("-", 1)[1]
            return f"a raw device mapping ({mode} mode): its LUN is not read through the datastore"
        if self.mode.startswith("independent"):
            return f"an independent disk ({self.mode}): vSphere leaves it out of snapshots"
        return None

    @property
    def flat_path(self) -> str:
        """The flat extent's path inside its datastore, as the /folder endpoint wants it."""
        path = self.file.split("] ", 1)[1] if "] " in self.file else self.file
        return path[: -len(".vmdk")] + "-flat.vmdk" if path.endswith(".vmdk") else path


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    moref: str
    created: datetime | None
    description: str = ""


@dataclass(frozen=True)
class Placement:
    """Where a restored VM goes, resolved and checked (morefs as strings)."""

    datacenter: str
    datastore: str
    free: int
    name: str
    folder: str
    pool: str
    host: str | None
    network: str | None


@dataclass(frozen=True)
class NfcImport:
    """A VM being imported (ImportVApp): its lease, the VM, and per disk (in the order asked)
    the URL its stream is PUT to and the host certificate's thumbprint (None: vCenter's own)."""

    lease: str
    vm: str
    urls: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class VMInfo:
    name: str
    moref: str
    uuid: str
    power_state: str
    cbt_enabled: bool
    vmx_path: str
    datacenter: str
    disks: tuple[DiskInfo, ...]
    snapshots: tuple[SnapshotInfo, ...]
    datastores: tuple[str, ...]


def datacenter_name(entity: Any) -> str:
    node = entity.parent
    while node is not None and not isinstance(node, vim.Datacenter):
        node = node.parent
    return str(node.name) if node is not None else ""


def disks_of(devices: Any) -> Iterator[DiskInfo]:
    for dev in devices or []:
        if not isinstance(dev, vim.vm.device.VirtualDisk):
            continue
        backing = dev.backing
        file = getattr(backing, "fileName", "") or ""
        datastore = file[1 : file.index("]")] if file.startswith("[") and "]" in file else ""
        capacity = int(dev.capacityInBytes or 0) or int(dev.capacityInKB) * 1024
        kind = "flat"
        if isinstance(backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
            kind = "rdm-physical" if str(backing.compatibilityMode) == "physicalMode" else "rdm-virtual"
        yield DiskInfo(
            key=int(dev.key),
            label=dev.deviceInfo.label if dev.deviceInfo else "",
            capacity=capacity,
            file=file,
            datastore=datastore,
            thin=bool(getattr(backing, "thinProvisioned", False)),
            change_id=getattr(backing, "changeId", None) or None,
            uuid=getattr(backing, "uuid", None) or None,
            mode=str(getattr(backing, "diskMode", None) or "persistent"),
            kind=kind,
        )


def snapshots_of(trees: Any) -> Iterator[SnapshotInfo]:
    for node in trees or []:
        yield SnapshotInfo(
            name=node.name,
            moref=node.snapshot._moId,
            created=node.createTime,
            description=node.description or "",
        )
        yield from snapshots_of(node.childSnapshotList)
