"""Hot-add: attach a disk of a powered-off VM to vbm's proxy VM on a free SCSI slot, and detach it."""

from __future__ import annotations

from pyVmomi import vim

from shared.vsphere.session import NotFound, Session, VSphereError


class HotAdd(Session):
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
