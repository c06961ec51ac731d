"""The vSphere adapter: the only code in vbm that imports pyVmomi; nothing `vim.*` leaks out.

`client.VCenter` is one session with a vCenter (calls, tasks, snapshots, CBT, restores);
`inventory` reads a whole vCenter's VMs in a few PropertyCollector calls (hosts, clusters,
pools, folders, datastores, disks) for job selections and the API; `tags` reads vSphere tags
through the vAPI REST endpoint.
"""

from shared.vsphere.client import (
    DiskInfo,
    NfcImport,
    NotFound,
    Placement,
    SnapshotInfo,
    TaskTimeout,
    VCenter,
    VMInfo,
    VSphereError,
)

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
