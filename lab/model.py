"""What a lab is made of: datastores, tag categories, VMs and their disks (a spec file's shape,
read by `lab.spec`, started by `lab.launcher.start_lab`)."""

from __future__ import annotations

from dataclasses import dataclass

DISK_MODES = ("persistent", "independent_persistent", "independent_nonpersistent")


@dataclass(frozen=True)
class DiskSpec:
    size: int  # bytes, multiple of 1024
    seed: int = 0
    layout: str = "mixed"  # "mixed" (random/text/zero segments), "zero", "random"
    thick: bool = False  # the descriptor then does not say ddb.thinProvisioned = "1"
    # the device's backing diskMode: independent disks are left out of snapshots (as in vSphere)
    mode: str = "persistent"
    kind: str = "flat"  # "flat", or "rdm" (a raw device mapping, VirtualDiskRawDiskMappingVer1BackingInfo)
    compatibility: str = ""  # rdm: "virtualMode" (default) or "physicalMode" (always independent_persistent)
    datastore: str = ""  # "" = the VM's datastore

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % 1024:
            raise ValueError(f"disk size {self.size} is not a positive multiple of 1024")
        if self.layout not in ("mixed", "zero", "random"):
            raise ValueError(f"unknown disk layout {self.layout!r}")
        if self.mode not in DISK_MODES:
            raise ValueError(f"unknown disk mode {self.mode!r} (one of {', '.join(DISK_MODES)})")
        if self.kind not in ("flat", "rdm"):
            raise ValueError(f"unknown disk kind {self.kind!r} (flat or rdm)")
        if self.kind == "rdm":
            compat = self.compatibility or "virtualMode"
            if compat not in ("virtualMode", "physicalMode"):
                raise ValueError(f"unknown RDM compatibility {compat!r} (virtualMode or physicalMode)")
            object.__setattr__(self, "compatibility", compat)
            if compat == "physicalMode":
                # disk modes do not apply to a physical RDM: vSphere shows it independent_persistent
                if self.mode == "independent_nonpersistent":
                    raise ValueError("a physicalMode RDM cannot be independent_nonpersistent")
                object.__setattr__(self, "mode", "independent_persistent")
        elif self.compatibility:
            raise ValueError("compatibility is only for kind 'rdm'")


@dataclass(frozen=True)
class TagRef:
    """A vSphere tag, named by its category."""

    category: str
    name: str


@dataclass(frozen=True)
class VMSpec:
    name: str
    disks: tuple[DiskSpec, ...]
    cbt: bool = False  # CBT initially enabled
    power_on: bool = True
    folder: str = ""  # a folder path under the datacenter's vm folder, e.g. "prod/web" (created)
    host: str = ""  # "" = DC0_H0; or DC0_C0_H0..DC0_C0_H2 (cluster DC0_C0)
    resource_pool: str = ""  # a child pool of the host's (cluster's) root pool, by name (created)
    datastore: str = ""  # "" = the lab's first datastore
    tags: tuple[TagRef, ...] = ()  # each must be declared in LabSpec.tag_categories
    quiesce_fails: bool = False  # CreateSnapshot_Task(quiesce=True) fails (ApplicationQuiesceFault)


@dataclass(frozen=True)
class DatastoreSpec:
    name: str
    latency_ms: float = 0  # before the first byte of every /folder/ GET/HEAD (0 = none)
    bandwidth_mbps: float = 0  # all downloads of the datastore together, megabits/s (0 = none)


@dataclass(frozen=True)
class TagCategorySpec:
    name: str
    tags: tuple[str, ...] = ()
    cardinality: str = "MULTIPLE"  # or "SINGLE"
    description: str = ""
    associable_types: tuple[str, ...] = ()  # () = any type, as vCenter stores it


@dataclass(frozen=True)
class LabSpec:
    vms: tuple[VMSpec, ...]
    cbt_max_areas: int = 0  # 0 = no cap on areas per QueryChangedDiskAreas reply
    username: str = "user"
    password: str = "pass"
    tools_boot_seconds: float = 0  # > 0: VMware Tools simulated, heartbeat green that long after power-on
    datastores: tuple[DatastoreSpec, ...] = ()  # () = one datastore, LocalDS_0; the first is the default
    tag_categories: tuple[TagCategorySpec, ...] = ()
