"""A whole vCenter's VMs in a few PropertyCollector calls, with where each one lives.

Reading VM by VM costs a round trip per property per VM (minutes for a thousand VMs); one
`RetrievePropertiesEx` over a container view per object type, paged, costs seconds. Used by job
selections (folder, cluster, host, resource pool, datastore, tag, name pattern), the planner
(each VM's host and datastores, for the limits) and the API's VM list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from shared.vsphere.client import VCenter
from shared.vsphere.info import disks_of

VM_PROPS = [
    "name",
    "config.uuid",
    "config.template",
    "config.changeTrackingEnabled",
    "config.hardware.device",
    "runtime.powerState",
    "runtime.host",
    "resourcePool",
    "parent",
    "config.files.vmPathName",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
]
PAGE = 500


@dataclass(frozen=True)
class InventoryDisk:
    key: int
    label: str
    capacity: int
    datastore: str
    mode: str
    kind: str
    unreadable: str | None  # why a backup cannot take it from a snapshot


@dataclass(frozen=True)
class InventoryVM:
    """A VM and its place: folder path under the datacenter's VM folder (`prod/web`), host, its
    cluster, the chain of resource pools it sits in (innermost first, without the root), and the
    datastores its files are on. `tags` is filled in by the caller when it asks for tags."""

    vcenter: str
    moref: str
    name: str
    uuid: str
    power_state: str
    template: bool
    cbt: bool
    datacenter: str
    folder: str
    host: str | None
    cluster: str | None
    pools: tuple[str, ...]
    datastores: tuple[str, ...]
    disks: tuple[InventoryDisk, ...]
    tags: tuple[str, ...] = ()
    cpus: int = 0
    memory_mb: int = 0

    def view(self) -> dict[str, Any]:
        return {
            "vcenter": self.vcenter, "moref": self.moref, "name": self.name, "power_state": self.power_state,
            "datacenter": self.datacenter, "folder": self.folder, "host": self.host, "cluster": self.cluster,
            "resource_pool": self.pools[0] if self.pools else None, "datastores": list(self.datastores),
            "tags": list(self.tags),
            "disks": [
                {"key": d.key, "label": d.label, "capacity": d.capacity, "datastore": d.datastore,
                 "mode": d.mode, "kind": d.kind, "unreadable": d.unreadable}
                for d in self.disks
            ],
        }  # fmt: skip


def read_inventory(vc: VCenter) -> list[InventoryVM]:
    """Every VM of the vCenter (templates included, marked), placed."""

    def run() -> list[InventoryVM]:
        content = vc._content()
        names: dict[str, str] = {}
        parents: dict[str, Any] = {}
        for kind in (vim.Folder, vim.Datacenter, vim.ComputeResource, vim.ResourcePool):
            for obj in _retrieve(content, kind, ["name", "parent"]):
                names[obj["_moref"]] = obj.get("name", "")
                parents[obj["_moref"]] = obj.get("parent")
        host_of: dict[str, tuple[str, str | None]] = {}
        for obj in _retrieve(content, vim.HostSystem, ["name", "parent"]):
            parent = obj.get("parent")
            cluster = names.get(parent._moId) if isinstance(parent, vim.ClusterComputeResource) else None
            host_of[obj["_moref"]] = (obj.get("name", ""), cluster)
        out = []
        for obj in _retrieve(content, vim.VirtualMachine, VM_PROPS):
            if obj.get("config.uuid") is None and obj.get("config.hardware.device") is None:
                continue  # a VM still being created (no config yet)
            host = obj.get("runtime.host")
            host_name, cluster = host_of.get(host._moId, (None, None)) if host is not None else (None, None)
            folder, datacenter = _folder_path(obj.get("parent"), names, parents)
            disks = tuple(
                InventoryDisk(d.key, d.label, d.capacity, d.datastore, d.mode, d.kind, d.unreadable)
                for d in disks_of(obj.get("config.hardware.device"))
            )
            out.append(
                InventoryVM(
                    vcenter=vc.settings.name,
                    moref=obj["_moref"],
                    name=obj.get("name", ""),
                    uuid=obj.get("config.uuid") or "",
                    power_state=str(obj.get("runtime.powerState", "")),
                    template=bool(obj.get("config.template")),
                    cbt=bool(obj.get("config.changeTrackingEnabled")),
                    datacenter=datacenter,
                    folder=folder,
                    host=host_name,
                    cluster=cluster,
                    pools=_pool_chain(obj.get("resourcePool"), names, parents),
                    datastores=_stores(obj.get("config.files.vmPathName"), disks),
                    disks=disks,
                    cpus=int(obj.get("config.hardware.numCPU") or 0),
                    memory_mb=int(obj.get("config.hardware.memoryMB") or 0),
                )
            )
        return out

    return vc._call("reading the inventory", run)


def _retrieve(content: Any, kind: Any, props: list[str]) -> Iterator[dict[str, Any]]:
    """Every object of `kind` with `props` (a dict per object, `_moref` its id), page by page."""
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        pc = content.propertyCollector
        traverse = vmodl.query.PropertyCollector.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView
        )
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=props, all=False)],
        )
        result = pc.RetrievePropertiesEx(
            [spec], vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=PAGE)
        )
        while result is not None:
            for item in result.objects or []:
                values: dict[str, Any] = {"_moref": item.obj._moId}
                for prop in item.propSet or []:
                    values[prop.name] = prop.val
                yield values
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
    finally:
        view.Destroy()


def _stores(vmx: str | None, disks: tuple[InventoryDisk, ...]) -> tuple[str, ...]:
    """The datastores the VM's own files live on: its folder's and its disks' (not a datastore
    it merely mounts an ISO from: those carry no snapshot of it)."""
    found: list[str] = []
    for path in [vmx or "", *(f"[{d.datastore}]" for d in disks if not d.kind.startswith("rdm"))]:
        if path.startswith("[") and "]" in path:
            name = path[1 : path.index("]")]
            if name and name not in found:
                found.append(name)
    return tuple(found)


def _folder_path(parent: Any, names: dict[str, str], parents: dict[str, Any]) -> tuple[str, str]:
    """('prod/web', 'DC0'): the VM's folders below its datacenter's VM folder, and the datacenter."""
    parts: list[str] = []
    node = parent
    while node is not None:
        above = parents.get(node._moId)
        if isinstance(above, vim.Datacenter):  # node is the datacenter's vmFolder
            return "/".join(reversed(parts)), names.get(above._moId, "")
        if isinstance(node, vim.Folder):
            parts.append(names.get(node._moId, ""))
        node = above
    return "/".join(reversed(parts)), ""


def _pool_chain(pool: Any, names: dict[str, str], parents: dict[str, Any]) -> tuple[str, ...]:
    chain: list[str] = []
    node = pool
    while isinstance(node, vim.ResourcePool):
        above = parents.get(node._moId)
        if not isinstance(above, vim.ResourcePool):
            break  # node is the root pool ("Resources") of a host or cluster: not a choice anyone made
        chain.append(names.get(node._moId, ""))
        node = above
    return tuple(chain)
