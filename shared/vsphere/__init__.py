"""The vSphere adapter: the only code in vbm that imports pyVmomi; nothing `vim.*` leaks out.

`client.VCenter` is one session with a vCenter, assembled from one mixin per role: `session`
(login, calls, task waiting, errors), `vms` (lookups, register, NICs, power, delete),
`snapshots` (snapshots and CBT), `placement` (where a restored VM goes), `nfc` (disk import
leases), `hotadd` (disks attached to the proxy VM) and `files` (datastore mounts and folders);
`info` holds the dataclasses they return. `inventory` reads a whole vCenter's VMs in a few
PropertyCollector calls (hosts, clusters, pools, folders, datastores, disks) for job selections
and the API; `selection` resolves a job's selectors; `tags` reads vSphere tags through the vAPI
REST endpoint; `pool` keeps one `VCenter` per configured vCenter. `datastore` reads and writes
files over the datastore HTTP API (its blocking side in `transfer`); `vmdk` and `vmx` are the
disk and VM file formats.
"""

from shared.vsphere.client import VCenter
from shared.vsphere.info import DiskInfo, NfcImport, Placement, SnapshotInfo, VMInfo
from shared.vsphere.session import NotFound, TaskTimeout, VSphereError

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
