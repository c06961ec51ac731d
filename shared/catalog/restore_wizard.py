"""What the web UI's restore wizard reads and checks around `restores.request_restore` (the one
function behind POST /api/v1/restores): the VMs with restore points, a VM's restore points, the
places a VM may go on a vCenter (datastores with free space, networks, hosts and clusters, names
taken) and the choices that cannot work there, said per field before anything is queued."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.catalog import runs as runstore
from shared.catalog.restores import RestoreRequest
from shared.db.models import RestorePointRow
from shared.errors import NotFound
from shared.model.units import human_bytes
from shared.settings import Settings

MODES = {
    "new_vm": "A new VM",
    "in_place": "In place (overwrite the VM's disks)",
    "instant": "Instant recovery (run it from the backup)",
    "test": "Restore test (an isolated test VM, removed afterwards)",
    "download": "Download a disk",
}
FIELDS = ("mode", "name", "vcenter", "datacenter", "resource_pool", "datastore", "network", "folder",
          "power_on", "disk_format", "confirm", "confirm_name", "method")  # fmt: skip
DISK_FORMATS = {
    "as_source": "As the source (each disk as it was backed up)",
    "thin": "Thin (only the data is written; the disks grow as the VM writes)",
    "thick": "Thick (the whole capacity of every disk is written)",
}


def vms(session: Session, search: str | None) -> list[dict[str, Any]]:
    """The VMs with restore points (name, vCenter, moref, how many, newest), by name; `search`
    keeps those whose name holds it (any case)."""
    query = select(
        RestorePointRow.vcenter,
        RestorePointRow.vm_moref,
        func.max(RestorePointRow.vm_name),
        func.count(),
        func.max(RestorePointRow.finished_at),
    ).group_by(RestorePointRow.vcenter, RestorePointRow.vm_moref)
    if search:
        query = query.where(func.lower(RestorePointRow.vm_name).contains(search.lower(), autoescape=True))
    found = session.execute(query.order_by(func.max(RestorePointRow.vm_name), RestorePointRow.vcenter))
    return [
        {"vcenter": vc, "moref": moref, "name": name, "count": n, "newest": newest}
        for vc, moref, name, n, newest in found
    ]


def points(session: Session, vcenter: str, moref: str) -> list[dict[str, Any]]:
    """A VM's restore points, newest first, as GET /api/v1/backups shows them."""
    rows = session.scalars(
        select(RestorePointRow)
        .where(RestorePointRow.vcenter == vcenter, RestorePointRow.vm_moref == moref)
        .order_by(RestorePointRow.finished_at.desc())
    ).all()
    if not rows:
        raise NotFound(f"no restore points of VM {moref!r} on vCenter {vcenter!r}")
    return [runstore.backup_view(r) for r in rows]


def point(session: Session, rp_id: str) -> dict[str, Any]:
    if len(rp_id) > 64 or not rp_id.isprintable():
        raise NotFound(f"no restore point {rp_id[:40]!r}")
    return runstore.backup_view(runstore.get_backup(session, rp_id))


def refused(view: Mapping[str, Any]) -> str | None:
    """Why a restore point cannot be restored from the wizard (it failed verification), or None."""
    if view["verify_state"] != "failed":
        return None
    problems = view.get("verify_problems") or ["see its verification"]
    return f"This restore point failed verification ({problems[0]}): verify it again or choose another."


def choices(settings: Settings, vcenter: str) -> dict[str, Any]:
    """Per datacenter of `vcenter`: its datastores, networks, hosts and clusters, VM names
    (blocking: it asks vCenter)."""
    from shared.catalog.jobs import vcenter_of
    from shared.vsphere import VCenter

    client = VCenter(vcenter_of(settings, vcenter), timeout=30)
    try:
        return client.placement_choices()
    finally:
        client.close()


def request_of(rp_id: str, answers: Mapping[str, str]) -> tuple[RestoreRequest | None, dict[str, str]]:
    """The RestoreRequest of the wizard's answers, or the problems per field (the request's own
    validation, the messages POST /api/v1/restores answers)."""
    mode = answers.get("mode", "new_vm")
    body: dict[str, Any] = {"restore_point_id": rp_id, "mode": mode}
    for name in ("name", "datacenter", "resource_pool", "datastore", "network", "folder"):
        if answers.get(name) and (mode != "in_place" or name not in ("name", "datastore", "network")):
            body[name] = answers[name]
    if mode == "new_vm":  # another vCenter and the disk format: a new VM's choices only
        for name in ("vcenter", "disk_format"):
            if answers.get(name):
                body[name] = answers[name]
    body["power_on"] = answers.get("power_on") == "on"
    if mode == "in_place":
        body["confirm"] = answers.get("confirm") == "on" or bool(answers.get("confirm_name"))
        body["method"] = "fast" if answers.get("method") == "fast" else "full"
    try:
        return RestoreRequest.model_validate(body), {}
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "mode"
            problems.setdefault(field, str(error["msg"]).removeprefix("Value error, "))
        return None, {**missing(answers), **problems}


def missing(answers: Mapping[str, str]) -> dict[str, str]:
    """The answers a kind of restore needs and did not get."""
    required = {"new_vm": ("name", "datastore"), "instant": ("name",), "test": ("datastore", "network")}
    return {
        name: f"Choose the {name.replace('_', ' ')}"
        for name in required.get(answers.get("mode", "new_vm"), ())
        if not answers.get(name)
    }


def problems_of(
    body: RestoreRequest, view: Mapping[str, Any], answers: Mapping[str, str], where: Mapping[str, Any] | None
) -> dict[str, str]:
    """What cannot work: the in-place name not typed, a datastore without room, a name taken,
    a network, host or datastore that the datacenter does not have (`where`: its choices)."""
    out: dict[str, str] = {}
    if body.mode == "in_place":
        if answers.get("confirm_name") != view["vm_name"]:
            out["confirm_name"] = f"Type the VM's name, {view['vm_name']}, exactly to overwrite its disks"
        return out
    out.update(missing(answers))
    if where is None:
        return out
    stores = {d["name"]: d for d in where["datastores"]}
    need = sum(int(d.get("capacity", 0)) for d in view.get("disks") or [])
    # thick (and as the source, at most) writes every disk's whole capacity; thin only the data,
    # which the catalog does not hold: the mover checks that room before it writes anything
    sized = body.mode != "instant" and body.disk_format != "thin"
    if body.datastore and body.datastore not in stores:
        out["datastore"] = f"No datastore {body.datastore!r} here (there are: {', '.join(stores) or 'none'})"
    elif body.datastore and sized and stores[body.datastore]["free"] < need:
        free = stores[body.datastore]["free"]
        thick = " written thick" if body.disk_format == "thick" else ""
        other = ", or the thin disk format (only their data is written)" if body.mode == "new_vm" else ""
        out["datastore"] = (
            f"Datastore {body.datastore} has {human_bytes(free)} free; the VM's disks need"
            f" {human_bytes(need)}{thick}: choose another{other}"
        )
    if body.name and body.mode in ("new_vm", "instant") and body.name in where["vm_names"]:
        out["name"] = f"A VM named {body.name!r} exists already: choose another name"
    if body.network and body.network not in where["networks"]:
        out["network"] = f"No network {body.network!r} here"
    if body.resource_pool and body.resource_pool not in where["computes"]:
        out["resource_pool"] = f"No host or cluster {body.resource_pool!r} here"
    return out
