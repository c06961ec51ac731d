"""NFC import: ImportVApp a VM that creates empty thin disks, hand out its lease's upload URLs,
and keep the lease alive, complete it or abort it."""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

from pyVmomi import vim, vmodl

from shared.vsphere.info import NfcImport, Placement
from shared.vsphere.session import Session, VSphereError


class Nfc(Session):
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
