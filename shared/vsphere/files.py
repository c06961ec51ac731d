"""Datastores through the API: mounting one on a host (NFS or local) and unmounting it, and
datastore folders (create, delete)."""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from shared.vsphere.info import Placement
from shared.vsphere.session import Session, VSphereError, _bad, _find_datacenter


class Files(Session):
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
