"""The vSphere adapter: the only module that imports pyVmomi.

Everything here is blocking (pyVmomi is synchronous); services call it through a thread. Nothing
`vim.*` leaves this module: callers get the plain dataclasses below, and errors as `VSphereError`
with the fault's name, a readable message and whether retrying could help. Every vSphere task is
awaited to its end (or to a deadline, raising `TaskTimeout`, after which the work may still
complete: callers that create things must be ready to find them later).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pyVim import connect
from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapStubAdapter
from pyVmomi.VmomiSupport import GetServiceVersions

from shared.settings import VCenterSettings

T = TypeVar("T")

RETRYABLE_FAULTS = frozenset(
    {
        "TaskInProgress",
        "ResourceInUse",
        "ResourceBusy",
        "HostCommunication",
        "HostNotConnected",
        "NotAuthenticated",
        "SystemError",
        "RequestCanceled",
        "Timedout",
        "ConcurrentAccess",
    }
)


class VSphereError(Exception):
    """A vSphere call failed. `fault` is the vim fault type (or a transport error's name).
    `settled`: vCenter said its task ended in error, so nothing of it is still under way (unlike
    a timeout or a lost answer, after which the task may still complete)."""

    def __init__(self, message: str, *, fault: str, retryable: bool, settled: bool = False) -> None:
        super().__init__(message)
        self.fault = fault
        self.retryable = retryable
        self.settled = settled


class NotFound(VSphereError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} does not exist", fault="ManagedObjectNotFound", retryable=False)


class TaskTimeout(VSphereError):
    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(
            f"{what} did not finish within {seconds:.0f}s (it may still complete)",
            fault="Timedout",
            retryable=True,
        )


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


def _fault_name(exc: BaseException) -> str:
    return type(exc).__name__.rsplit(".", 1)[-1]


def _fault_message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or str(exc) or _fault_name(exc)
    return str(msg).strip()


def translate(exc: BaseException, doing: str) -> VSphereError:
    """Any pyVmomi or transport error -> VSphereError saying what we were doing."""
    if isinstance(exc, VSphereError):
        return exc
    if isinstance(exc, vmodl.fault.ManagedObjectNotFound):
        return NotFound(doing)
    if isinstance(exc, (OSError, http.client.HTTPException, socket.timeout)):
        return VSphereError(
            f"{doing}: vCenter unreachable ({_fault_message(exc)})",
            fault=_fault_name(exc),
            retryable=True,
        )
    name = _fault_name(exc)
    return VSphereError(
        f"{doing}: {name}: {_fault_message(exc)}", fault=name, retryable=name in RETRYABLE_FAULTS
    )


class VCenter:
    """A session with one vCenter (or ESXi host). Calls are serialised on one lock."""

    def __init__(self, settings: VCenterSettings, *, timeout: float = 60.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._si: Any = None
        self._lock = threading.RLock()
        parts = urlsplit(settings.url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path or "/sdk"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    # session
    def connect(self) -> None:
        with self._lock:
            if self._si is not None:
                return
            stub: Any = None
            try:
                # SmartConnect's steps, done here so a failed login can close its connections.
                if self.settings.verify_tls and self.settings.ca_file:
                    ssl_ctx = ssl.create_default_context(cafile=self.settings.ca_file)
                else:
                    ssl_ctx = connect.getSslContext(self.host, None, not self.settings.verify_tls)
                version = _find_version(self.scheme, self.host, self.port, self.path, ssl_ctx)
                stub = SoapStubAdapter(
                    host=self.host,
                    port=self.port if self.scheme == "https" else -self.port,  # <0: plain HTTP
                    path=self.path,
                    version=version,
                    sslContext=ssl_ctx,
                    httpConnectionTimeout=self.timeout,
                    connectionPoolTimeout=self.timeout,
                )
                si = vim.ServiceInstance("ServiceInstance", stub)
                content = si.RetrieveContent()
                assert content.sessionManager is not None
                content.sessionManager.Login(
                    self.settings.username, self.settings.password.get_secret_value(), None
                )
                self._si = si
            except vim.fault.InvalidLogin:
                _drop(stub)
                raise VSphereError(
                    f"vCenter {self.settings.name} refused the login of {self.settings.username}:"
                    " check the username and password",
                    fault="InvalidLogin",
                    retryable=False,
                ) from None
            except Exception as exc:
                _drop(stub)
                err = translate(exc, f"connecting to vCenter {self.settings.name}")
                if not isinstance(exc, vmodl.MethodFault):
                    err.retryable = True  # pyVmomi says "is down or is not a VIM server"
                raise err from None

    def close(self) -> None:
        with self._lock:
            if self._si is not None:
                with contextlib.suppress(Exception):  # the session is going anyway
                    self._si.content.sessionManager.Logout()
                _drop(self._si._stub)
                self._si = None

    def session_cookie(self) -> str:
        """The `vmware_soap_session` cookie value, for datastore HTTP access."""
        self.connect()
        cookie: str = self._si._stub.cookie
        return cookie.split("=", 1)[1].split(";", 1)[0] if "=" in cookie else cookie

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        """Run `fn` with a session; re-login once if the session expired."""
        with self._lock:
            for attempt in (1, 2):
                self.connect()
                try:
                    return fn()
                except vim.fault.NotAuthenticated:
                    _drop(self._si._stub)
                    self._si = None
                    if attempt == 2:
                        raise VSphereError(
                            f"{doing}: session lost", fault="NotAuthenticated", retryable=True
                        ) from None
                except Exception as exc:
                    if isinstance(exc, (OSError, http.client.HTTPException)):
                        _drop(self._si._stub)  # the connection is suspect: start a new session
                        self._si = None
                    raise translate(exc, doing) from None
        raise AssertionError("unreachable")

    def _content(self) -> Any:
        return self._si.RetrieveContent()

    def _vm(self, moref: str) -> Any:
        vm = vim.VirtualMachine(moref, self._si._stub)
        try:
            vm.name  # noqa: B018 - fetch once to prove it exists
        except vmodl.fault.ManagedObjectNotFound:
            raise NotFound(f"VM {moref}") from None
        return vm

    def _snapshot(self, moref: str) -> Any:
        return vim.vm.Snapshot(moref, self._si._stub)

    # inventory
    def list_vms(self) -> list[VMInfo]:
        def run() -> list[VMInfo]:
            content = self._content()
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
            try:
                return [self._describe(vm) for vm in view.view if vm.config is not None]
            finally:
                view.Destroy()

        return self._call("listing VMs", run)

    def vm(self, moref: str) -> VMInfo:
        return self._call(f"reading VM {moref}", lambda: self._describe(self._vm(moref)))

    def find_vm(self, name: str) -> VMInfo:
        for info in self.list_vms():
            if info.name == name:
                return info
        raise NotFound(f"VM named {name!r} on {self.settings.name}")

    def _describe(self, vm: Any) -> VMInfo:
        config = vm.config
        return VMInfo(
            name=vm.name,
            moref=vm._moId,
            uuid=config.uuid or "",
            power_state=str(vm.runtime.powerState),
            cbt_enabled=bool(config.changeTrackingEnabled),
            vmx_path=vm.summary.config.vmPathName or "",
            datacenter=_datacenter_of(vm),
            disks=tuple(_disks(config.hardware.device)),
            snapshots=tuple(_walk_snapshots(vm.snapshot.rootSnapshotList if vm.snapshot else [])),
            datastores=tuple(ds.name for ds in vm.datastore),
        )

    def datastore_free(self, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        """(capacity, free) bytes of the named datastores."""

        def run() -> dict[str, tuple[int, int]]:
            content = self._content()
            view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
            try:
                return {
                    ds.name: (int(ds.summary.capacity), int(ds.summary.freeSpace))
                    for ds in view.view
                    if ds.name in names
                }
            finally:
                view.Destroy()

        return self._call("reading datastore space", run)

    # CBT and snapshots
    def set_cbt(self, moref: str, enabled: bool, *, timeout: float | None = None) -> None:
        def run() -> None:
            vm = self._vm(moref)
            spec = vim.vm.ConfigSpec(changeTrackingEnabled=enabled)
            self._wait(
                vm.ReconfigVM_Task(spec), f"turning CBT {'on' if enabled else 'off'} on {moref}", timeout
            )

        self._call(f"configuring CBT on VM {moref}", run)

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
        def run() -> SnapshotInfo:
            vm = self._vm(moref)
            task = vm.CreateSnapshot_Task(name=name, description=description, memory=memory, quiesce=quiesce)
            snap = self._wait(task, f"creating snapshot {name} of {moref}", timeout)
            return SnapshotInfo(name=name, moref=snap._moId, created=None, description=description)

        return self._call(f"snapshotting VM {moref}", run)

    def snapshots(self, moref: str) -> list[SnapshotInfo]:
        return list(self.vm(moref).snapshots)

    def remove_snapshot(self, snapshot_moref: str, *, timeout: float | None = None) -> None:
        """Remove one snapshot (consolidating its delta). A snapshot already gone is success."""

        def run() -> None:
            snap = self._snapshot(snapshot_moref)
            try:
                vm = snap.vm
                task = snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
            except vmodl.fault.ManagedObjectNotFound:
                return
            self._wait(task, f"removing snapshot {snapshot_moref}", timeout)
            # A removal can leave delta disks behind ("consolidation needed"): finish the job.
            if vm is not None and vm.runtime.consolidationNeeded:
                self._wait(vm.ConsolidateVMDisks_Task(), f"consolidating the disks of {vm._moId}", timeout)

        self._call(f"removing snapshot {snapshot_moref}", run)

    def snapshot_disks(self, snapshot_moref: str) -> list[DiskInfo]:
        """The disks as frozen in the snapshot (their backing is the file to read)."""

        def run() -> list[DiskInfo]:
            snap = self._snapshot(snapshot_moref)
            return list(_disks(snap.config.hardware.device))

        return self._call(f"reading snapshot {snapshot_moref}", run)

    def changed_areas(
        self, vm_moref: str, snapshot_moref: str | None, disk_key: int, capacity: int, change_id: str
    ) -> list[tuple[int, int]]:
        """(offset, length) areas changed since `change_id` ('*': all allocated), all pages; up to
        the snapshot, or with `snapshot_moref` None up to the disk's current state (vSphere allows
        that only while the VM is powered off)."""

        def run() -> list[tuple[int, int]]:
            vm = self._vm(vm_moref)
            snap = self._snapshot(snapshot_moref) if snapshot_moref else None
            out: list[tuple[int, int]] = []
            start = 0
            while start < capacity:
                info = vm.QueryChangedDiskAreas(
                    snapshot=snap, deviceKey=disk_key, startOffset=start, changeId=change_id
                )
                out.extend((int(a.start), int(a.length)) for a in info.changedArea or [])
                covered = int(info.startOffset) + int(info.length)
                if covered <= start:
                    raise VSphereError(
                        f"QueryChangedDiskAreas made no progress at offset {start}",
                        fault="InvalidResponse",
                        retryable=False,
                    )
                start = covered
            return out

        return self._call(f"querying changed areas of disk {disk_key} of {vm_moref}", run)

    # restores
    def placement(
        self,
        datacenter: str,
        datastore: str,
        name: str,
        *,
        folder: str | None = None,
        resource_pool: str | None = None,
        network: str | None = None,
    ) -> Placement:
        """Resolve and check where a restored VM goes; NotFound/VSphereError say what is wrong."""

        def run() -> Placement:
            content = self._content()
            dcs = {dc.name: dc for dc in content.rootFolder.childEntity if isinstance(dc, vim.Datacenter)}
            dc = dcs.get(datacenter)
            if dc is None:
                raise _bad(f"no datacenter {datacenter!r} on {self.settings.name} (there are: {_names(dcs)})")
            stores = {ds.name: ds for ds in dc.datastore}
            ds = stores.get(datastore) if datastore else None
            if datastore and ds is None:
                raise _bad(
                    f"no datastore {datastore!r} in datacenter {datacenter} (there are: {_names(stores)})"
                )
            if ds is not None and not ds.summary.accessible:
                raise _bad(f"datastore {datastore} is not accessible now", retryable=True)
            view = content.viewManager.CreateContainerView(dc, [vim.VirtualMachine], True)
            try:
                same = [vm._moId for vm in view.view if vm.name == name]
            finally:
                view.Destroy()
            if same:
                raise _bad(
                    f"a VM named {name!r} already exists in {datacenter} ({same[0]}): choose another name"
                )
            nets = {n.name: n for n in dc.network}
            if network is not None and network not in nets:
                raise _bad(f"no network {network!r} in datacenter {datacenter} (there are: {_names(nets)})")
            target_folder = dc.vmFolder
            for part in [p for p in (folder or "").split("/") if p]:
                child = next(
                    (f for f in target_folder.childEntity if isinstance(f, vim.Folder) and f.name == part),
                    None,
                )
                if child is None:
                    raise _bad(f"no VM folder {folder!r} in datacenter {datacenter} ({part!r} not found)")
                target_folder = child
            pool, host = self._pool(content, dc, datacenter, resource_pool)
            return Placement(
                datacenter=datacenter,
                datastore=datastore,
                free=int(ds.summary.freeSpace) if ds is not None else 0,
                name=name,
                folder=target_folder._moId,
                pool=pool,
                host=host,
                network=network,
            )

        return self._call(f"checking where to restore {name!r}", run)

    def _pool(self, content: Any, dc: Any, datacenter: str, wanted: str | None) -> tuple[str, str | None]:
        """(resource pool moref, host moref or None) for a host, cluster or pool name."""
        view = content.viewManager.CreateContainerView(
            dc.hostFolder, [vim.ComputeResource, vim.ResourcePool, vim.HostSystem], True
        )
        try:
            objs = list(view.view)
        finally:
            view.Destroy()
        computes = [o for o in objs if isinstance(o, vim.ComputeResource)]
        if wanted is None:
            if not computes:
                raise _bad(f"datacenter {datacenter} has no host or cluster to run the VM")
            first: Any = computes[0]
            return str(first.resourcePool._moId), None
        o: Any
        for o in objs:
            if o.name != wanted:
                continue
            if isinstance(o, vim.ResourcePool):
                return str(o._moId), None
            if isinstance(o, vim.HostSystem):
                parent: Any = o.parent
                return str(parent.resourcePool._moId), str(o._moId)
            return str(o.resourcePool._moId), None
        names = sorted({o.name for o in objs})
        raise _bad(
            f"no host, cluster or resource pool {wanted!r} in {datacenter} (there are: {', '.join(names)})"
        )

    def register_vm(self, where: Placement, vmx_path: str, *, timeout: float | None = None) -> str:
        """Register the uploaded `.vmx` ("[ds] name/name.vmx") as a VM named `where.name`."""

        def run() -> str:
            folder = vim.Folder(where.folder, self._si._stub)
            pool = vim.ResourcePool(where.pool, self._si._stub)
            host = vim.HostSystem(where.host, self._si._stub) if where.host else None
            task = folder.RegisterVM_Task(
                path=vmx_path, name=where.name, asTemplate=False, pool=pool, host=host
            )
            vm = self._wait(task, f"registering {vmx_path} as {where.name}", timeout)
            return str(vm._moId)

        return self._call(f"registering VM {where.name}", run)

    def connect_nics(self, moref: str, network: str, *, timeout: float | None = None) -> int:
        """Put every NIC of the VM on `network` (a standard or distributed port group)."""

        def run() -> int:
            vm = self._vm(moref)
            net = (
                next((n for n in vm.runtime.host.parent.network if n.name == network), None)
                if (vm.runtime.host is not None)
                else None
            )
            if net is None:
                net = next((n for n in _datacenter(vm).network if n.name == network), None)
            if net is None:
                raise _bad(f"no network {network!r} for VM {moref}")
            changes = []
            for dev in vm.config.hardware.device:
                if not isinstance(dev, vim.vm.device.VirtualEthernetCard):
                    continue
                if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
                    dvs: Any = net.config.distributedVirtualSwitch
                    dev.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                        port=vim.dvs.PortConnection(portgroupKey=net.key, switchUuid=dvs.uuid)
                    )
                else:
                    dev.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
                        deviceName=network, network=net
                    )
                changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=dev))
            if changes:
                spec = vim.vm.ConfigSpec(deviceChange=changes)
                self._wait(vm.ReconfigVM_Task(spec), f"connecting {moref} to {network}", timeout)
            return len(changes)

        return self._call(f"connecting VM {moref} to {network}", run)

    def vm_hardware(self, moref: str) -> dict[str, Any]:
        """CPUs, memory, guest id and each NIC's network: what a restore test compares."""

        def run() -> dict[str, Any]:
            vm = self._vm(moref)
            nics = [
                getattr(d.backing, "deviceName", None) or ""
                for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualEthernetCard)
            ]
            return {
                "cpus": int(vm.config.hardware.numCPU),
                "memory_mb": int(vm.config.hardware.memoryMB),
                "guest_id": str(vm.config.guestId or ""),
                "nics": nics,
                "power_state": str(vm.runtime.powerState),
                "vmx_path": vm.summary.config.vmPathName or "",
            }

        return self._call(f"reading VM {moref}", run)

    def _host_for(self, where: Placement) -> Any:
        if where.host:
            return vim.HostSystem(where.host, self._si._stub)
        pool: Any = vim.ResourcePool(where.pool, self._si._stub)
        owner: Any = pool.owner
        if not owner.host:
            raise _bad(f"resource pool {where.pool} has no host to mount a datastore on")
        return owner.host[0]

    def mount_datastore(self, where: Placement, name: str, path: str, nfs_server: str | None) -> str:
        """Mount `path` as datastore `name` on the placement's host: an NFS export of `nfs_server`
        (the backup host), or, without one, a local datastore (vCenter and vbm share the disk:
        the lab). Returns the datastore's moref."""

        def run() -> str:
            system = self._host_for(where).configManager.datastoreSystem
            if nfs_server:
                spec = vim.host.NasVolume.Specification(
                    remoteHost=nfs_server, remotePath=path, localPath=name, accessMode="readWrite", type="NFS"
                )
                ds = system.CreateNasDatastore(spec=spec)
            else:
                ds = system.CreateLocalDatastore(name=name, path=path)
            return str(ds._moId)

        return self._call(f"mounting {path} as datastore {name}", run)

    def unmount_datastore(self, where: Placement, name: str) -> None:
        """Remove datastore `name` from the host; one already gone is success."""

        def run() -> None:
            host = self._host_for(where)
            for ds in host.datastore:
                if ds.name == name:
                    host.configManager.datastoreSystem.RemoveDatastore(datastore=ds)
                    return

        self._call(f"unmounting datastore {name}", run)

    def relocate(self, moref: str, datastore: str, *, timeout: float | None = None) -> None:
        """Move a VM's files to `datastore` (Storage vMotion when it runs)."""

        def run() -> None:
            vm = self._vm(moref)
            target = next((d for d in _datacenter(vm).datastore if d.name == datastore), None)
            if target is None:
                raise _bad(f"no datastore {datastore!r} in the VM's datacenter")
            spec = vim.vm.RelocateSpec(datastore=target)
            self._wait(vm.RelocateVM_Task(spec=spec), f"moving {moref} to {datastore}", timeout)

        self._call(f"moving VM {moref} to {datastore}", run)

    def guest_status(self, moref: str) -> dict[str, str]:
        """VMware Tools' view: tools status, running status and the guest heartbeat colour."""

        def run() -> dict[str, str]:
            vm = self._vm(moref)
            guest = vm.guest
            return {
                "tools": str(getattr(guest, "toolsStatus", None) or "unknown"),
                "tools_running": str(getattr(guest, "toolsRunningStatus", None) or "unknown"),
                "heartbeat": str(vm.guestHeartbeatStatus or "gray"),
                "ip": str(getattr(guest, "ipAddress", None) or ""),
            }

        return self._call(f"reading the guest of VM {moref}", run)

    def power_off(self, moref: str, *, timeout: float | None = None) -> bool:
        """Power a VM off (hard); True if it was on."""

        def run() -> bool:
            vm = self._vm(moref)
            if str(vm.runtime.powerState) != "poweredOn":
                return False
            self._wait(vm.PowerOffVM_Task(), f"powering off {moref}", timeout)
            return True

        return self._call(f"powering off VM {moref}", run)

    def power_on(self, moref: str, *, timeout: float | None = None) -> None:
        def run() -> None:
            vm = self._vm(moref)
            if str(vm.runtime.powerState) != "poweredOn":
                self._wait(vm.PowerOnVM_Task(), f"powering on {moref}", timeout)

        self._call(f"powering on VM {moref}", run)

    def import_disks(
        self, where: Placement, vmx_path: str, disks: list[tuple[str, int]], *, timeout: float | None = None
    ) -> NfcImport:
        """ImportVApp a VM whose only purpose is to create thin disks ("[ds] dir/name.vmdk",
        capacity in bytes) at `vmx_path`'s folder, and wait for its NFC lease to be ready.

        The caller PUTs a streamOptimized stream per disk, completes the lease, unregisters the
        VM and registers the restored .vmx over it. Up to 60 disks (4 SCSI controllers).
        """
        if not disks or len(disks) > 60:
            raise ValueError(f"an import creates 1 to 60 disks, not {len(disks)}")

        def run() -> NfcImport:
            changes: list[Any] = []
            for bus in range(-(-len(disks) // 15)):
                controller = vim.vm.device.VirtualLsiLogicController(key=1000 + bus, busNumber=bus)
                controller.sharedBus = vim.vm.device.VirtualSCSIController.Sharing.noSharing
                changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=controller))
            for index, (file, capacity) in enumerate(disks):
                bus, slot = divmod(index, 15)
                backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                    fileName=file, diskMode="persistent", thinProvisioned=True
                )
                disk = vim.vm.device.VirtualDisk(
                    key=-(index + 1), controllerKey=1000 + bus, unitNumber=slot if slot < 7 else slot + 1,
                    capacityInKB=-(-capacity // 1024), capacityInBytes=capacity, backing=backing,
                )  # fmt: skip
                changes.append(
                    vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)
                )
            config = vim.vm.ConfigSpec(
                name=where.name, guestId="otherGuest64", numCPUs=1, memoryMB=128,
                files=vim.vm.FileInfo(vmPathName=vmx_path), deviceChange=changes,
            )  # fmt: skip
            pool = vim.ResourcePool(where.pool, self._si._stub)
            folder = vim.Folder(where.folder, self._si._stub)
            host = vim.HostSystem(where.host, self._si._stub) if where.host else None
            lease = pool.ImportVApp(spec=vim.vm.VmImportSpec(configSpec=config), folder=folder, host=host)
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            while lease.state == vim.HttpNfcLease.State.initializing:
                if time.monotonic() > deadline:
                    raise VSphereError(
                        f"the import of {where.name} did not become ready in time",
                        fault="Timeout",
                        retryable=True,
                    )
                time.sleep(0.2)
            if lease.state != vim.HttpNfcLease.State.ready:
                error = lease.error
                raise VSphereError(
                    f"the import of {where.name} failed: {getattr(error, 'msg', None) or lease.state}",
                    fault=type(error).__name__ if error is not None else "ImportFailed",
                    retryable=False,
                )
            info = lease.info
            if info is None:
                raise VSphereError(f"the import of {where.name} gave no lease information", fault="NotFound",
                                   retryable=False)  # fmt: skip
            urls = [u for u in info.deviceUrl if u.disk]
            return NfcImport(
                lease=str(lease._moId),
                vm=str(info.entity._moId),
                urls=tuple(
                    self._nfc_url(self._match_url(urls, file, index)) for index, (file, _) in enumerate(disks)
                ),
            )

        return self._call(f"importing disks for {where.name}", run)

    @staticmethod
    def _match_url(urls: list[Any], file: str, index: int) -> Any:
        """The lease URL of the index-th disk asked for: by file name (vcsim, some vCenters), by
        "...Controller<bus>:<unit>" key, else by position."""
        base = file.rsplit("/", 1)[-1]
        for u in urls:
            if u.targetId == base or u.url.rsplit("/", 1)[-1] == base:
                return u
        bus, slot = divmod(index, 15)
        unit = slot if slot < 7 else slot + 1
        for u in urls:
            if u.key and u.key.endswith(f"Controller{bus}:{unit}"):
                return u
        if index < len(urls):
            return urls[index]
        raise VSphereError(f"the import's lease offers no URL for {file}", fault="NotFound", retryable=False)

    def _nfc_url(self, device_url: Any) -> tuple[str, str | None]:
        """A lease URL with its host "*" replaced by vCenter's (as vSphere asks of clients)."""
        url = str(device_url.url)
        parts = urlsplit(url)
        if parts.hostname == "*":
            mine = urlsplit(self.settings.url)
            return f"{mine.scheme}://{mine.netloc}{parts.path}", None
        return url, (str(device_url.sslThumbprint) if device_url.sslThumbprint else None)

    def lease_progress(self, lease: str, percent: int) -> None:
        """Keep an NFC lease alive (vCenter drops one that hears nothing for minutes)."""
        self._call(
            "reporting import progress", lambda: vim.HttpNfcLease(lease, self._si._stub).Progress(percent)
        )

    def lease_complete(self, lease: str) -> None:
        self._call("completing the import", lambda: vim.HttpNfcLease(lease, self._si._stub).Complete())

    def lease_abort(self, lease: str, reason: str) -> None:
        """Abort an import (vSphere removes the VM it was creating); a lease already gone is fine."""
        fault = vmodl.fault.SystemError(reason=reason)

        def run() -> None:
            with contextlib.suppress(vmodl.fault.ManagedObjectNotFound, vim.fault.InvalidState):
                vim.HttpNfcLease(lease, self._si._stub).Abort(fault)

        self._call("aborting the import", run)

    def attach_disk(self, proxy: str, disk_file: str, capacity: int, *, timeout: float | None = None) -> None:
        """Hot-add: attach an existing disk ("[ds] vm/vm.vmdk", of a powered-off VM) to the VM
        `proxy` (vbm's own), on a SCSI controller slot that is free. Attaching a disk that is
        already attached there is success."""

        def run() -> None:
            vm = self._vm(proxy)
            devices = vm.config.hardware.device
            if any(getattr(getattr(d, "backing", None), "fileName", None) == disk_file for d in devices):
                return
            slot = None
            for ctrl in (d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)):
                used = {d.unitNumber for d in devices if d.controllerKey == ctrl.key}
                free = [u for u in range(16) if u != 7 and u not in used]
                if free:
                    slot = (ctrl.key, free[0])
                    break
            if slot is None:
                raise VSphereError(
                    f"proxy VM {vm.name} has no free SCSI slot to attach {disk_file}: add a SCSI controller",
                    fault="NoFreeSlot", retryable=False,
                )  # fmt: skip
            backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=disk_file, diskMode="persistent")
            disk = vim.vm.device.VirtualDisk(
                key=-1, controllerKey=slot[0], unitNumber=slot[1], backing=backing,
                capacityInKB=-(-capacity // 1024), capacityInBytes=capacity,
            )  # fmt: skip
            change = vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)
            task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change]))
            self._wait(task, f"attaching {disk_file} to {vm.name}", timeout)

        self._call(f"attaching {disk_file} to VM {proxy}", run)

    def detach_disk(self, proxy: str, disk_file: str, *, timeout: float | None = None) -> bool:
        """Remove the disk from `proxy`, keeping its files; False if it was not attached."""

        def run() -> bool:
            try:
                vm = self._vm(proxy)
            except NotFound:
                return False
            for dev in vm.config.hardware.device:
                if getattr(getattr(dev, "backing", None), "fileName", None) == disk_file:
                    change = vim.vm.device.VirtualDeviceSpec(operation="remove", device=dev)
                    task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change]))
                    self._wait(task, f"detaching {disk_file} from {vm.name}", timeout)
                    return True
            return False

        return self._call(f"detaching {disk_file} from VM {proxy}", run)

    def unregister_vm(self, moref: str) -> None:
        """Remove a VM from the inventory, leaving its files; a VM already gone is success."""

        def run() -> None:
            try:
                vm = self._vm(moref)
            except NotFound:
                return
            try:
                vm.UnregisterVM()
            except vim.fault.InvalidPowerState:
                self._wait(vm.PowerOffVM_Task(), f"powering off {moref}", None)
                vm.UnregisterVM()
            except vmodl.fault.ManagedObjectNotFound:
                return

        self._call(f"unregistering VM {moref}", run)

    def destroy_vm(self, moref: str, *, timeout: float | None = None) -> None:
        """Power off (if on) and delete a VM with its files; a VM already gone is success."""

        def run() -> None:
            try:
                vm = self._vm(moref)
            except NotFound:
                return
            if str(vm.runtime.powerState) == "poweredOn":
                self._wait(vm.PowerOffVM_Task(), f"powering off {moref}", timeout)
            self._wait(vm.Destroy_Task(), f"deleting VM {moref}", timeout)

        self._call(f"deleting VM {moref}", run)

    def datacenters(self) -> list[str]:
        def run() -> list[str]:
            content = self._content()
            return [dc.name for dc in content.rootFolder.childEntity if isinstance(dc, vim.Datacenter)]

        return self._call("listing datacenters", run)

    def make_directory(self, datacenter: str, path: str) -> None:
        """Create "[ds] folder"; an existing one is an error (FileAlreadyExists, or CannotCreateFile)."""

        def run() -> None:
            content = self._content()
            dc = _find_datacenter(content, datacenter)
            content.fileManager.MakeDirectory(name=path, datacenter=dc, createParentDirectories=False)

        self._call(f"creating {path}", run)

    def delete_path(self, datacenter: str, path: str, *, timeout: float | None = None) -> None:
        """Delete "[ds] folder" with what is in it; a path already gone is success."""

        def run() -> None:
            content = self._content()
            dc = _find_datacenter(content, datacenter)
            try:
                task = content.fileManager.DeleteDatastoreFile_Task(name=path, datacenter=dc)
                self._wait(task, f"deleting {path}", timeout)
            except VSphereError as exc:
                if exc.fault not in ("FileNotFound", "FileNotFoundFault"):
                    raise

        self._call(f"deleting {path}", run)

    def _wait(self, task: Any, what: str, timeout: float | None) -> Any:
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        delay = 0.05
        while True:
            info = task.info
            if info.state == vim.TaskInfo.State.success:
                return info.result
            if info.state == vim.TaskInfo.State.error:
                err = translate(info.error, what)
                err.settled = True
                raise err
            if time.monotonic() >= deadline:
                raise TaskTimeout(what, limit)
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)


def _bad(message: str, *, retryable: bool = False) -> VSphereError:
    return VSphereError(message, fault="InvalidArgument", retryable=retryable)


def _names(found: dict[str, Any]) -> str:
    return ", ".join(sorted(found)) or "none"


def _find_datacenter(content: Any, name: str) -> Any:
    for dc in content.rootFolder.childEntity:
        if isinstance(dc, vim.Datacenter) and dc.name == name:
            return dc
    raise _bad(f"no datacenter {name!r}")


def _datacenter(entity: Any) -> Any:
    node = entity.parent
    while node is not None and not isinstance(node, vim.Datacenter):
        node = node.parent
    return node


def _find_version(scheme: str, host: str, port: int, path: str, ssl_ctx: Any) -> str:
    """The newest API version both pyVmomi and the server speak (as SmartConnect finds it)."""
    find = getattr(connect, "__FindSupportedVersion")
    preferred = GetServiceVersions("vim25")
    version = find(scheme, host, port, path, preferred, ssl_ctx, None, 80, None)
    if version is None:
        raise VSphereError(
            f"{scheme}://{host}:{port}{path} is down or is not a vSphere API endpoint",
            fault="NotVSphere",
            retryable=True,
        )
    return str(version)


def _drop(stub: Any) -> None:
    """Close a stub's pooled connections (pyVmomi leaves them open on failed logins)."""
    if stub is not None:
        with contextlib.suppress(Exception):
            stub.DropConnections()


def _datacenter_of(entity: Any) -> str:
    node = entity.parent
    while node is not None and not isinstance(node, vim.Datacenter):
        node = node.parent
    return str(node.name) if node is not None else ""


def _disks(devices: Any) -> Iterator[DiskInfo]:
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


def _walk_snapshots(trees: Any) -> Iterator[SnapshotInfo]:
    for node in trees or []:
        yield SnapshotInfo(
            name=node.name,
            moref=node.snapshot._moId,
            created=node.createTime,
            description=node.description or "",
        )
        yield from _walk_snapshots(node.childSnapshotList)
