"""VMs: lookups (list, read, find, datastore space, datacenters), registering, NICs and
hardware, moving, the guest's status, power, unregistering and deleting."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from shared.vsphere.info import Placement, VMInfo, datacenter_name, disks_of, snapshots_of
from shared.vsphere.session import NotFound, Session, _bad, _datacenter


class VMs(Session):
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
            datacenter=datacenter_name(vm),
            disks=tuple(disks_of(config.hardware.device)),
            snapshots=tuple(snapshots_of(vm.snapshot.rootSnapshotList if vm.snapshot else [])),
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

    def datacenters(self) -> list[str]:
        def run() -> list[str]:
            content = self._content()
            return [dc.name for dc in content.rootFolder.childEntity if isinstance(dc, vim.Datacenter)]

        return self._call("listing datacenters", run)

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
