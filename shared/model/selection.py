"""What a job's selection says: VMs named, selectors (one criterion each), exclusions. Pure:
resolving it against a vCenter's inventory is `shared.vsphere.selection`."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from shared.vsphere.inventory import InventoryVM

EXCLUDED = "excluded by the job"
CRITERIA = ("folder", "cluster", "host", "resource_pool", "datastore", "tag", "name")


class VMRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vcenter: str | None = Field(default=None, max_length=64, description="Default: the job's vCenter")
    moref: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    name: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _named(self) -> VMRef:
        if not self.moref and not self.name:
            raise ValueError("a VM needs a moref (e.g. vm-42) or a name")
        return self


class Selector(BaseModel):
    """Exactly one criterion: folder, cluster, host, resource_pool, datastore, tag or name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vcenter: str | None = Field(default=None, max_length=64, description="Default: the job's vCenter")
    folder: str | None = Field(default=None, min_length=1, max_length=1024, description="e.g. prod/web")
    cluster: str | None = Field(default=None, min_length=1, max_length=255)
    host: str | None = Field(default=None, min_length=1, max_length=255)
    resource_pool: str | None = Field(default=None, min_length=1, max_length=255)
    datastore: str | None = Field(default=None, min_length=1, max_length=255)
    tag: str | None = Field(default=None, min_length=1, max_length=255, description="Category/Tag or Tag")
    name: str | None = Field(default=None, min_length=1, max_length=255, description="a pattern: web-*")

    @model_validator(mode="after")
    def _one(self) -> Selector:
        given = [c for c in CRITERIA if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError(f"a selector has exactly one of {', '.join(CRITERIA)} (it has {len(given)})")
        return self

    @property
    def criterion(self) -> tuple[str, str]:
        name = next(c for c in CRITERIA if getattr(self, c) is not None)
        return name, str(getattr(self, name))

    def matches(self, vm: InventoryVM) -> bool:
        kind, value = self.criterion
        if kind == "folder":
            want = value.strip("/")
            return vm.folder == want or vm.folder.startswith(want + "/")
        if kind == "cluster":
            return vm.cluster == value
        if kind == "host":
            return vm.host == value
        if kind == "resource_pool":
            return value in vm.pools
        if kind == "datastore":
            return value in vm.datastores
        if kind == "tag":
            return any(t == value or t.split("/", 1)[-1] == value for t in vm.tags)
        return fnmatch.fnmatchcase(vm.name, value)


class DiskRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vm: VMRef
    keys: tuple[int, ...] = Field(min_length=1, max_length=64, description="device keys, e.g. 2001")


class Exclusions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vms: tuple[VMRef, ...] = Field(default=(), max_length=1000)
    disks: tuple[DiskRule, ...] = Field(default=(), max_length=1000)
