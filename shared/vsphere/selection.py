"""Which VMs a job holds: a list of VMs, selectors resolved at every run, and exclusions.

A job names VMs (by moref, resolved from names when it is saved) and/or *selectors*: every VM in
a folder (and its subfolders), a cluster, on a host, in a resource pool (and its child pools), on
a datastore, carrying a vSphere tag (`Category/Tag`, or `Tag` in any category), or whose name
matches a pattern (`web-*`, shell-style). Each VM reference and selector may name its vCenter;
without one it is the job's. Exclusions remove VMs (by moref or name) and disks of a VM (by key).
Resolution (`resolve`) happens at every run against each vCenter's inventory of the moment, so
new VMs are protected without editing the job; templates are never selected. `preview` shows
what it resolves to today.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.db.models import Job
from shared.model.selection import Exclusions, Selector, VMRef
from shared.vsphere import VCenter
from shared.vsphere.inventory import InventoryVM


@dataclass(frozen=True)
class Chosen:
    """A VM a run backs up (placed when its vCenter answered; a listed VM it does not know stays,
    without a place, so that its snapshot step says what is wrong)."""

    vcenter: str
    moref: str
    name: str
    host: str | None = None
    datastores: tuple[str, ...] = ()
    why: str = "listed"
    skipped_disks: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class JobSelection:
    vcenter: str
    vms: tuple[VMRef, ...]
    select: tuple[Selector, ...]
    exclude: Exclusions

    def vcenters(self) -> list[str]:
        names = {r.vcenter or self.vcenter for r in self.vms} | {
            s.vcenter or self.vcenter for s in self.select
        }
        return sorted(names)

    def wants_tags(self, vcenter: str) -> bool:
        return any(s.tag is not None and (s.vcenter or self.vcenter) == vcenter for s in self.select)


def of_spec(vcenter: str, vms: Any, select: Any, exclude: Any) -> JobSelection:
    return JobSelection(vcenter=vcenter, vms=tuple(vms), select=tuple(select), exclude=exclude)


def of_job(job: Job) -> JobSelection:
    chosen = job.selection or {}
    return JobSelection(
        vcenter=job.vcenter,
        vms=tuple(VMRef.model_validate(v) for v in job.vms or []),
        select=tuple(Selector.model_validate(s) for s in chosen.get("select") or []),
        exclude=Exclusions.model_validate(chosen.get("exclude") or {}),
    )


def with_tags_of(inventory: list[InventoryVM]) -> Callable[[VCenter], list[InventoryVM]]:
    """A vCenter call that adds each VM's tags to `inventory`."""
    from dataclasses import replace

    from shared.vsphere.tags import attached_tags

    def run(vc: VCenter) -> list[InventoryVM]:
        tags = attached_tags(vc)
        return [replace(vm, tags=tags.get(vm.moref, ())) for vm in inventory]

    return run


def _names(ref: VMRef, vm: InventoryVM | Chosen) -> bool:
    """Whether `ref` names `vm`: by moref when it has one (names repeat), else by name."""
    return ref.moref == vm.moref if ref.moref else ref.name == vm.name


def _excluded(spec: JobSelection, vm: InventoryVM | Chosen) -> bool:
    return any((ref.vcenter or spec.vcenter) == vm.vcenter and _names(ref, vm) for ref in spec.exclude.vms)


def _place(vm: InventoryVM, why: str, spec: JobSelection) -> Chosen:
    rules = [
        set(r.keys)
        for r in spec.exclude.disks
        if (r.vm.vcenter or spec.vcenter) == vm.vcenter and _names(r.vm, vm)
    ]
    excluded = set().union(*rules) if rules else set()
    skipped = tuple(
        {
            "key": d.key,
            "label": d.label,
            "reason": "excluded by the job" if d.key in excluded else d.unreadable,
        }
        for d in vm.disks
        if d.key in excluded or d.unreadable
    )
    return Chosen(vm.vcenter, vm.moref, vm.name, vm.host, vm.datastores, why, skipped)


def resolve(spec: JobSelection, inventories: Mapping[str, list[InventoryVM] | None]) -> list[Chosen]:
    """The VMs the job holds now: its list, then every selector's matches, less the exclusions;
    each VM once (the first reason it was chosen), ordered by vCenter and name."""
    chosen: dict[tuple[str, str], Chosen] = {}
    for ref in spec.vms:
        vcenter = ref.vcenter or spec.vcenter
        inventory = inventories.get(vcenter)
        # By moref (the job stores it; a name may now be another VM's), else by name.
        found = next((vm for vm in inventory or [] if _names(ref, vm)), None)
        if found is not None:
            chosen.setdefault((vcenter, found.moref), _place(found, "listed", spec))
        elif ref.moref:
            chosen.setdefault((vcenter, ref.moref), Chosen(vcenter, ref.moref, ref.name or ref.moref))
    for selector in spec.select:
        vcenter = selector.vcenter or spec.vcenter
        kind, value = selector.criterion
        for vm in inventories.get(vcenter) or []:
            if not vm.template and selector.matches(vm):
                chosen.setdefault((vcenter, vm.moref), _place(vm, f"{kind} {value}", spec))
    kept = [c for c in chosen.values() if not _excluded(spec, c)]
    return sorted(kept, key=lambda c: (c.vcenter, c.name, c.moref))


def preview(spec: JobSelection, read: Callable[[str, bool], list[InventoryVM]]) -> dict[str, Any]:
    """What the selection resolves to now: `read(vcenter, with_tags)` gives an inventory (or
    raises); a vCenter that cannot be read is named with why, the others' VMs are listed."""
    inventories: dict[str, list[InventoryVM] | None] = {}
    unreachable = []
    for name in spec.vcenters():
        try:
            inventories[name] = read(name, spec.wants_tags(name))
        except Exception as exc:
            inventories[name] = None
            unreachable.append({"vcenter": name, "error": str(exc)})
    chosen = resolve(spec, inventories)
    return {
        "vms": [
            {"vcenter": c.vcenter, "moref": c.moref, "name": c.name, "chosen_by": c.why, "host": c.host,
             "datastores": list(c.datastores), "skipped_disks": list(c.skipped_disks)}
            for c in chosen
        ],
        "total": len(chosen),
        "unreachable": unreachable,
    }  # fmt: skip
