"""The VMs of vCenters as GET /api/v1/vms and `vbm vm ls --json` show them: each VM's view, and
the answer of a listing in which some vCenters could not be asked (named with why, while the
others' VMs are listed). The asking is the caller's: the gateway through its long-lived
sessions, the CLI with a session of its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.clock import iso
from shared.errors import Unreachable
from shared.settings import VCenterSettings

if TYPE_CHECKING:
    from shared.vsphere import VMInfo


def vm_view(vcenter: str, vm: VMInfo) -> dict[str, Any]:
    return {
        "vcenter": vcenter,
        "name": vm.name,
        "moref": vm.moref,
        "uuid": vm.uuid,
        "power_state": vm.power_state,
        "cbt": vm.cbt_enabled,
        "disks": [{"key": d.key, "label": d.label, "capacity": d.capacity} for d in vm.disks],
        "snapshots": [{"name": s.name, "moref": s.moref, "created": iso(s.created)} for s in vm.snapshots],
    }


def listing(
    asked: Sequence[tuple[VCenterSettings, list[VMInfo] | Unreachable]],
    broken: Mapping[str, Exception] | None = None,
) -> dict[str, Any]:
    """The answer: every VM of the vCenters `asked` (each with its VMs or why it did not answer),
    by vCenter and name; `broken` names vCenters added through the API that cannot be used at
    all (their password cannot be decrypted)."""
    vms: list[dict[str, Any]] = []
    unreachable: list[dict[str, Any]] = [
        {"vcenter": name, "url": None, "error": str(exc)} for name, exc in (broken or {}).items()
    ]
    for vc, listed in asked:
        if isinstance(listed, Unreachable):
            unreachable.append({"vcenter": vc.name, "url": vc.url, "error": str(listed)})
        else:
            vms.extend(vm_view(vc.name, vm) for vm in listed)
    vms.sort(key=lambda v: (v["vcenter"], v["name"]))
    return {
        "vms": vms,
        "total": len(vms),
        "vcenters": [vc.name for vc, _ in asked] + [u["vcenter"] for u in unreachable if u["url"] is None],
        "unreachable": unreachable,
    }
