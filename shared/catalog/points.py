"""Restore points in the catalog: the one writer of a restore point's row (the mover calls it when
a restore point is committed to its repository); readers query `RestorePointRow` where they are."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.db.models import RestorePointRow, Run
from shared.repo.manifest import RestorePoint


def record_restore_point(
    session: Session,
    rp: RestorePoint,
    *,
    task_id: str,
    run_id: str,
    vcenter: str,
    vm_moref: str,
    vm_name: str,
    repository: str,
    bytes_read: int,
    bytes_stored: int,
    sha256: dict[str, Any] | None = None,
) -> RestorePointRow:
    """Add the row of committed restore point `rp` (verification pending); returns it."""
    run = session.get(Run, run_id)
    row = RestorePointRow(
        id=rp.id,
        task_id=task_id,
        run_id=run_id,
        job_id=run.job_id if run else None,
        vcenter=vcenter,
        vm_moref=vm_moref,
        vm_name=vm_name,
        repository=repository,
        kind="incremental" if rp.parent else "full",
        parent=rp.parent,
        disks=[
            {
                "key": d.key,
                "capacity": d.capacity,
                "change_id": d.change_id,
                "stored_windows": d.stored_windows,
            }
            for d in rp.disks
        ],
        logical_bytes=sum(d.capacity for d in rp.disks),
        bytes_read=bytes_read,
        bytes_stored=bytes_stored,
        started_at=rp.started,
        finished_at=rp.finished,
        verify_state="pending",
        verify_problems=[],
        sha256=sha256,
    )
    session.add(row)
    return row
