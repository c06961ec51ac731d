"""Restores as people ask for them (REST API and `vbm restore`): request, list, show, cancel.

A request is checked against the catalog and the configuration here (the restore point exists,
the vCenter is configured, the name is a valid VM name, a restore point that failed verification
is refused unless `allow_unverified`); everything that needs vCenter (datacenter, datastore and
its free space, the name not taken, network, folder, resource pool) is checked by the mover
before it writes anything, and a failure there ends the restore with that reason. Every function
takes an open session and leaves committing to the caller.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.catalog import listing
from shared.catalog.listing import Paged, Window
from shared.catalog.tasks import close_run
from shared.clock import iso
from shared.contracts import RestoreRequested, RestoreTarget
from shared.db.models import Job, Restore, RestorePointRow, Run
from shared.errors import Conflict, Invalid, NotFound, StoreError
from shared.runtime.outbox import stage
from shared.settings import Settings

DiskFormat = Literal["as_source", "thin", "thick"]
FINAL = ("succeeded", "failed", "cancelled")
PHASES = (
    "queued", "checking", "powering_off", "uploading", "registering", "resetting_cbt", "powering_on",
    "testing", "materializing", "mounting", "instant", "migrating", "migrated", "stopping", "stopped",
    "cleaning_up", "done",
)  # fmt: skip


class RestoreRequest(BaseModel):
    """The body of POST /api/v1/restores (a restore as a new VM)."""

    model_config = ConfigDict(extra="forbid")

    restore_point_id: str = Field(min_length=1, max_length=64)
    mode: Literal["new_vm", "in_place", "test", "instant"] = "new_vm"
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description="new_vm, instant: the new VM's name",
    )
    datastore: str | None = Field(default=None, min_length=1, max_length=255, description="new_vm: where to")

    @field_validator("name")
    @classmethod
    def _vm_name(cls, value: str | None) -> str | None:
        if value is not None:
            problem = vm_name_problem(value)
            if problem:
                raise ValueError(problem)
        return value

    confirm: bool = Field(default=False, description="in_place: yes, overwrite the VM's disks")
    method: Literal["full", "fast"] = Field(
        default="full", description="in_place: write everything, or changes"
    )
    vcenter: str | None = Field(default=None, description="Default: the vCenter the VM was backed up from")
    datacenter: str | None = Field(
        default=None, description="Default: the original VM's datacenter, else the only one"
    )
    folder: str | None = None
    resource_pool: str | None = Field(default=None, description="A host, cluster or resource pool name")
    network: str | None = Field(default=None, description="Connect every NIC to this network")
    power_on: bool = False
    disk_format: DiskFormat | None = Field(
        default=None,
        description="new_vm, test: as_source (default: each disk as it was backed up), thin (only"
        " the data is written) or thick (the whole capacity is written); not for in_place, instant",
    )
    allow_unverified: bool = Field(default=False, description="Restore even if verification failed")


def vm_name_problem(name: str) -> str | None:
    """Why `name` cannot be a VM's name (it becomes the folder and file names on the datastore),
    or None. vCenter takes up to 80 characters and escapes `%`, `/` and `\\` in file names; vbm
    refuses those, control characters, names that are only dots, and blanks at either end."""
    if not 1 <= len(name) <= 80:
        return "a VM name has 1 to 80 characters"
    if name.strip(".") == "":
        return f"{name!r} cannot be a VM name (it is a folder of its own on the datastore)"
    if name != name.strip():
        return "a VM name cannot begin or end with a blank"
    bad = sorted(
        {c for c in name if c in "/\\%" or ord(c) < 32 or ord(c) == 127 or "\ud800" <= c <= "\udfff"}
    )
    if bad:
        return f"a VM name cannot hold {', '.join(repr(c) for c in bad)}"
    return None


def new_restore_id(now: datetime) -> str:
    return f"restore-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"


def request_restore(
    session: Session, body: RestoreRequest, settings: Settings, now: datetime, by: str | None = None
) -> Restore:
    """Create the restore (queued) and stage its RestoreRequested in the same transaction; `by`
    (who asked: the API's or the web UI's actor, `os:<user>` for the CLI) is kept in its target."""
    rp = session.get(RestorePointRow, body.restore_point_id)
    if rp is None:
        raise NotFound(f"no restore point {body.restore_point_id!r}")
    if body.mode == "test":
        if body.datastore is None:
            raise Invalid("datastore", "a restore test needs a datastore for the test VM")
        if body.network is None:
            raise Invalid("network", "a restore test needs an isolated network to connect the test VM to")
    elif body.mode == "instant":
        if body.name is None:
            raise Invalid("name", "instant recovery needs the name the VM runs under")
    elif body.mode == "new_vm":
        if body.name is None:
            raise Invalid("name", "a restore as a new VM needs the new VM's name")
        if body.datastore is None:
            raise Invalid("datastore", "a restore as a new VM needs the datastore to put it on")
    else:
        if not body.confirm:
            raise Invalid(
                "confirm",
                f"an in-place restore powers off VM {rp.vm_name} ({rp.vm_moref}) and overwrites its disks"
                " with the restore point: pass confirm: true",
            )
        if body.method == "fast" and not next(
            (v.hotadd_proxy for v in settings.vcenters if v.name == rp.vcenter), None
        ):
            raise Invalid(
                "method",
                "a fast in-place restore (writing only the windows that differ) attaches the VM's disks"
                f" to the VM vbm runs in (hot-add): set vcenters[{rp.vcenter}].hotadd_proxy to that VM's"
                " name, or use method full",
            )
        if body.vcenter not in (None, rp.vcenter):
            raise Invalid("vcenter", f"an in-place restore goes to the VM's own vCenter ({rp.vcenter})")
    if body.disk_format is not None and body.mode in ("in_place", "instant"):
        why = {
            "in_place": "an in-place restore writes into the VM's own disks",
            "instant": "an instant VM runs from the backup store",
        }[body.mode]
        raise Invalid("disk_format", f"{why}: a disk format does not apply; leave disk_format out")
    if rp.verify_state == "failed" and not body.allow_unverified:
        first = rp.verify_problems[0] if rp.verify_problems else "see its verification"
        raise Conflict(
            f"restore point {rp.id} failed verification ({first}); verify it again"
            " (POST /api/v1/backups/{id}/verify) or pass allow_unverified to restore it anyway"
        )
    vcenter = body.vcenter or rp.vcenter
    if vcenter not in {v.name for v in settings.vcenters}:
        names = ", ".join(v.name for v in settings.vcenters) or "none"
        raise Invalid("vcenter", f"{vcenter!r} is not a configured vCenter (configured: {names})")
    return _create(session, body, rp, vcenter, now, by=by)


def _create(
    session: Session,
    body: RestoreRequest,
    rp: RestorePointRow,
    vcenter: str,
    now: datetime,
    run_id: str | None = None,
    by: str | None = None,
) -> Restore:
    datacenter = body.datacenter
    name = body.name if body.mode in ("new_vm", "instant") else rp.vm_name
    if body.mode == "test":  # a temporary name that cannot collide with a production VM
        name = f"vbm-test-{rp.vm_name[:50]}-{secrets.token_hex(3)}"
    target = RestoreTarget(
        vcenter=vcenter,
        datacenter=datacenter,
        datastore=body.datastore or "",
        name=name or rp.vm_name,
        folder=body.folder,
        resource_pool=body.resource_pool,
        network=body.network,
        power_on=body.power_on or body.mode == "test",
        disk_format=body.disk_format or "as_source",
    )
    busy = session.scalars(
        select(Restore).where(Restore.state.not_in(FINAL), Restore.vcenter == vcenter)
    ).all()
    for other in busy:
        if body.mode in ("new_vm", "instant") and other.target.get("name") == body.name:
            raise Conflict(f"restore {other.id} is already creating a VM named {body.name!r}")
        if (
            body.mode == "in_place"
            and other.mode == "in_place"
            and other.target.get("vm_moref") == rp.vm_moref
        ):
            raise Conflict(f"restore {other.id} is already restoring VM {rp.vm_name} in place")
    row = Restore(
        id=new_restore_id(now),
        restore_point_id=rp.id,
        repository=rp.repository,
        vcenter=vcenter,
        mode=body.mode,
        target={
            **target.model_dump(mode="json"),
            "allow_unverified": body.allow_unverified,
            **({"requested_by": by} if by else {}),
            **({"vm_moref": rp.vm_moref, "method": body.method} if body.mode == "in_place" else {}),
        },
        state="queued",
        phase="queued",
        generation=0,
        bytes_done=0,
        bytes_total=sum(int(d.get("capacity", 0)) for d in rp.disks),
        rate=0.0,
        created={},
        cancel_requested=False,
        created_at=now,
        updated_at=now,
        run_id=run_id,
    )
    session.add(row)
    session.flush()
    stage(session, RestoreRequested(occurred_at=now, restore_id=row.id, restore_point_id=rp.id), now)
    return row


def start_restore_tests(session: Session, job: Job, run: Run, now: datetime) -> list[str]:
    """A run of a restore-test job: one restore test per VM, of its newest restore point that
    did not fail verification. The run is `running` at once and ends when its restores do."""
    options = (job.options or {})["restore_test"]
    run.state, run.started_at = "running", now
    started: list[str] = []
    missing: list[str] = []
    for vm in job.vms:
        query = select(RestorePointRow).where(
            RestorePointRow.verify_state != "failed",
            RestorePointRow.vcenter == (vm.get("vcenter") or job.vcenter),  # morefs repeat across vCenters
        )
        query = (
            query.where(RestorePointRow.vm_moref == vm["moref"])
            if vm.get("moref")
            else query.where(RestorePointRow.vm_name == vm["name"])
        )
        rp = session.scalars(query.order_by(RestorePointRow.finished_at.desc()).limit(1)).first()
        if rp is None:
            missing.append(vm.get("name") or vm.get("moref") or "?")
            continue
        body = RestoreRequest(
            restore_point_id=rp.id,
            mode="test",
            datastore=options["datastore"],
            network=options["network"],
            datacenter=options.get("datacenter"),
            vcenter=rp.vcenter,
        )
        try:
            row = _create(session, body, rp, rp.vcenter, now, run_id=run.id)
        except StoreError as exc:  # never let one VM stop the run (or the scheduler's slot)
            missing.append(f"{vm.get('name') or vm.get('moref')} ({exc})")
            continue
        started.append(row.id)
    if missing:
        run.error = f"no restore test started for: {', '.join(missing)}"
    if not started:
        close_run(session, run, "failed", now)
    return started


def instant_action(
    session: Session, restore_id: str, action: str, datastore: str | None, now: datetime
) -> Restore:
    """Migrate an instantly recovered VM to `datastore`, or stop it (remove it, unmount)."""
    row = get_restore(session, restore_id)
    if row.mode != "instant":
        raise Conflict(f"restore {restore_id} is not an instant recovery")
    if row.state != "succeeded" or row.phase != "instant":
        verb = "migrated" if action == "migrate" else "stopped"
        raise Conflict(
            f"restore {restore_id} is {row.state} in phase {row.phase}:"
            f" only a running instant VM can be {verb}"
        )
    if action == "migrate" and not datastore:
        raise Invalid("datastore", "migrating to production needs the datastore to move the VM to")
    row.phase = "migrating" if action == "migrate" else "stopping"
    row.updated_at = now
    stage(
        session,
        RestoreRequested(
            occurred_at=now,
            restore_id=row.id,
            restore_point_id=row.restore_point_id,
            action="migrate" if action == "migrate" else "stop",
            datastore=datastore,
        ),
        now,
    )
    return row


def get_restore(session: Session, restore_id: str) -> Restore:
    row = session.get(Restore, restore_id)
    if row is None:
        raise NotFound(f"no restore {restore_id!r}")
    return row


def list_restores(
    session: Session,
    window: Window,
    *,
    state: str | None = None,
    mode: str | None = None,
    vcenter: str | None = None,
    restore_point: str | None = None,
    vm: str | None = None,
) -> Paged:
    """Restores by creation time; `vm`: of a VM whose name holds it (any case), as backed up."""
    query = select(Restore)
    if vm:
        of_vm = select(RestorePointRow.id).where(
            func.lower(RestorePointRow.vm_name).contains(vm.lower(), autoescape=True)
        )
        query = query.where(Restore.restore_point_id.in_(of_vm))
    for column, value in (
        (Restore.state, state),
        (Restore.mode, mode),
        (Restore.vcenter, vcenter),
        (Restore.restore_point_id, restore_point),
    ):
        if value:
            query = query.where(column == value)
    return listing.page(session, query, Restore.created_at, Restore.id, window)


def cancel_restore(session: Session, restore_id: str) -> Restore:
    row = get_restore(session, restore_id)
    if row.state in FINAL:
        raise Conflict(f"restore {restore_id} has already ended ({row.state})")
    row.cancel_requested = True
    return row


def restore_view(row: Restore) -> dict[str, Any]:
    eta = None
    if row.state == "running" and row.rate > 0 and row.bytes_total > row.bytes_done:
        eta = round((row.bytes_total - row.bytes_done) / row.rate, 1)
    return {
        "id": row.id,
        "restore_point_id": row.restore_point_id,
        "repository": row.repository,
        "vcenter": row.vcenter,
        "mode": row.mode,
        "target": row.target,
        "state": row.state,
        "phase": row.phase,
        "bytes_done": row.bytes_done,
        "bytes_total": row.bytes_total,
        "rate": row.rate,
        "eta_s": eta,
        "vm_moref": row.vm_moref,
        "error": row.error,
        "cancel_requested": row.cancel_requested,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
    }
