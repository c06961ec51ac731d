"""The snapshot ledger: every snapshot vbm asks for is written down before it is asked for.

States: `requested` (intent recorded; the create may not have happened, or may still happen),
`created` (vCenter answered with its moref), `removing`, `removed`, `gone` (never appeared:
the VM has no snapshot of that name), `stuck` (removal failed `cleanup_attempts` times: an alert
names the VM; the sweeper keeps trying at a slow pace).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import SnapshotLedger

OPEN = ("requested", "created", "removing", "stuck")


def snapshot_name(run_id: str, tries: int = 1) -> str:
    """`vbm-<run id>`, and `-t<n>` for a VM's n-th try within its run (each try its own name)."""
    return f"vbm-{run_id}" if tries <= 1 else f"vbm-{run_id}-t{tries}"


def record_intent(
    session: Session,
    *,
    name: str,
    vcenter: str,
    vm_moref: str,
    vm_name: str,
    run_id: str,
    task_id: str,
    now: datetime,
) -> SnapshotLedger:
    entry = session.get(SnapshotLedger, (name, vm_moref, vcenter))
    if entry is None:
        entry = SnapshotLedger(
            snapshot_name=name,
            vcenter=vcenter,
            vm_moref=vm_moref,
            vm_name=vm_name,
            run_id=run_id,
            task_id=task_id,
            state="requested",
            requested_at=now,
            attempts=0,
        )
        session.add(entry)
    return entry


def open_entries(session: Session, task_id: str | None = None) -> list[SnapshotLedger]:
    query = select(SnapshotLedger).where(SnapshotLedger.state.in_(OPEN))
    if task_id is not None:
        query = query.where(SnapshotLedger.task_id == task_id)
    return list(session.scalars(query))


def open_vms(session: Session) -> dict[tuple[str, str], tuple[str, str]]:
    """(vcenter, VM moref) -> (state, task id) of every VM with a vbm snapshot open (or possibly
    being made); `stuck` wins when a VM has several."""
    rows = session.execute(
        select(
            SnapshotLedger.vcenter, SnapshotLedger.vm_moref, SnapshotLedger.state, SnapshotLedger.task_id
        ).where(SnapshotLedger.state.in_(OPEN))
    )
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for vc, vm, st, task in rows:
        if out.get((str(vc), str(vm)), ("",))[0] != "stuck":
            out[(str(vc), str(vm))] = (str(st), str(task))
    return out


def get(session: Session, name: str, vcenter: str, vm_moref: str) -> SnapshotLedger | None:
    return session.get(SnapshotLedger, (name, vm_moref, vcenter))
