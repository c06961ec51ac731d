"""Where a restored VM goes: datacenter, datastore, folder, resource pool or host and network,
resolved by name and checked before anything is created."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from shared.vsphere.info import Placement
from shared.vsphere.session import Session, _bad, _names


class Placing(Session):
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

    def placement_choices(self) -> dict[str, Any]:
        """What a restore may choose from, per datacenter: datastores (name, capacity, free
        bytes, accessible), networks, hosts and clusters, and the VM names already taken."""

        def run() -> dict[str, Any]:
            content = self._content()
            out: dict[str, Any] = {}
            for dc in content.rootFolder.childEntity:
                if not isinstance(dc, vim.Datacenter):
                    continue
                view = content.viewManager.CreateContainerView(
                    dc, [vim.VirtualMachine, vim.ComputeResource, vim.HostSystem], True
                )
                try:
                    objs = list(view.view)
                finally:
                    view.Destroy()
                out[dc.name] = {
                    "datastores": sorted(
                        (
                            {
                                "name": ds.name,
                                "capacity": int(ds.summary.capacity),
                                "free": int(ds.summary.freeSpace),
                                "accessible": bool(ds.summary.accessible),
                            }
                            for ds in dc.datastore
                        ),
                        key=lambda d: d["name"],
                    ),
                    "networks": sorted(n.name for n in dc.network),
                    "computes": sorted(
                        {o.name for o in objs if isinstance(o, vim.ComputeResource | vim.HostSystem)}
                    ),
                    "vm_names": sorted({o.name for o in objs if isinstance(o, vim.VirtualMachine)}),
                }
            return out

        return self._call("listing where a VM may be restored", run)
