"""Is a VM protected? Which jobs hold it (their selections resolved against the inventory of the
moment, as a run resolves them) and how its last backup went (its newest finished task, and its
newest restore point). Read by the web UI's VMs pages; pure reads of the catalog."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from shared.clock import iso
from shared.db.models import Job, RestorePointRow, Task
from shared.vsphere.inventory import InventoryVM
from shared.vsphere.selection import of_job, resolve

Key = tuple[str, str]  # (vcenter, moref)


def holders(jobs: Iterable[Job], inventories: Mapping[str, list[InventoryVM] | None]) -> dict[Key, list[Job]]:
    """The jobs that hold each VM now (a VM listed by moref in a job is held even when its
    vCenter cannot be asked)."""
    held: dict[Key, list[Job]] = {}
    for job in jobs:
        for chosen in resolve(of_job(job), inventories):
            held.setdefault((chosen.vcenter, chosen.moref), []).append(job)
    return held


def wants_tags(jobs: Iterable[Job], vcenter: str) -> bool:
    """Whether any job selects VMs of `vcenter` by tag (its inventory must then carry tags)."""
    return any(of_job(job).wants_tags(vcenter) for job in jobs)


def outcome(task: Task) -> str:
    """A finished task's result as a status word: succeeded, warning, failed or cancelled."""
    if task.state == "succeeded":
        return "warning" if task.warnings else "succeeded"
    return str(task.state)


def last_backups(session: Session) -> dict[Key, dict[str, Any]]:
    """Per VM that vbm ever backed up: its newest finished task's `state` and `at`, `run_id`,
    `error`, and its newest restore point (`restore_point_id`, `restore_point_at`)."""
    newest = (
        select(Task.vcenter, Task.vm_moref, func.max(Task.finished_at).label("at"))
        .where(Task.finished_at.is_not(None))
        .group_by(Task.vcenter, Task.vm_moref)
        .subquery()
    )
    tasks = session.scalars(
        select(Task).join(
            newest,
            (Task.vcenter == newest.c.vcenter)
            & (Task.vm_moref == newest.c.vm_moref)
            & (Task.finished_at == newest.c.at),
        )
    )
    out: dict[Key, dict[str, Any]] = {}
    for task in tasks:
        out[(task.vcenter, task.vm_moref)] = {
            "state": outcome(task),
            "at": iso(task.finished_at),
            "run_id": task.run_id,
            "error": task.error,
            "restore_point_id": None,
            "restore_point_at": None,
        }
    latest = (
        select(RestorePointRow.vcenter, RestorePointRow.vm_moref, func.max(RestorePointRow.finished_at))
        .group_by(RestorePointRow.vcenter, RestorePointRow.vm_moref)
        .subquery()
    )
    points = session.execute(
        select(
            RestorePointRow.id, RestorePointRow.vcenter, RestorePointRow.vm_moref, RestorePointRow.finished_at
        ).where(
            tuple_(RestorePointRow.vcenter, RestorePointRow.vm_moref, RestorePointRow.finished_at).in_(
                select(latest)
            )
        )
    )
    for rp_id, vcenter, moref, at in points:
        entry = out.setdefault(
            (vcenter, moref),
            {"state": "succeeded", "at": iso(at), "run_id": None, "error": None},
        )
        entry["restore_point_id"] = rp_id
        entry["restore_point_at"] = iso(at)
    return out
