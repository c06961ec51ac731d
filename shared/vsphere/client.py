"""`VCenter`, the one class callers use: a session with one vCenter and every call vbm makes,
assembled from one mixin per role (each module holds its methods; see the package docstring)."""

from __future__ import annotations

from shared.vsphere.files import Files
from shared.vsphere.hotadd import HotAdd
from shared.vsphere.info import DiskInfo, NfcImport, Placement, SnapshotInfo, VMInfo
from shared.vsphere.nfc import Nfc
from shared.vsphere.placement import Placing
from shared.vsphere.session import NotFound, TaskTimeout, VSphereError
from shared.vsphere.snapshots import Snapshots
from shared.vsphere.vms import VMs

__all__ = [
    "DiskInfo",
    "NfcImport",
    "NotFound",
    "Placement",
    "SnapshotInfo",
    "TaskTimeout",
    "VCenter",
    "VMInfo",
    "VSphereError",
]


class VCenter(Snapshots, VMs, Placing, Nfc, HotAdd, Files):
    """A session with one vCenter (or ESXi host). Calls are serialised on one lock."""
