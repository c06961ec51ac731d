"""Snapshots and changed block tracking: CBT on/off, create, list, remove (consolidating),
a snapshot's disks, and the areas changed since a change id."""

from __future__ import annotations

from pyVmomi import vim, vmodl

from shared.vsphere.info import DiskInfo, SnapshotInfo, disks_of
from shared.vsphere.session import VSphereError
from shared.vsphere.vms import VMs


class Snapshots(VMs):
    """Snapshots read the VM (`snapshots()`), hence built on `VMs`."""

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
            return list(disks_of(snap.config.hardware.device))

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
