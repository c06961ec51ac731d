"""The estate at a glance (the web UI's dashboard; an API route could answer the same): the last
24 hours of runs, what runs now, open alerts, repositories against the usage threshold, the next
scheduled runs and the snapshots vbm holds open. Read from the catalog only (nothing is measured,
nothing written), so it answers fast whatever vCenter does; which VMs are protected needs
vCenter's inventory and is `protection`, asked separately.

Honest numbers: with no finished run in the window there is no success rate (None), never 100 %.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.catalog import alerts, ledger, usage
from shared.catalog.runs import run_view, task_view
from shared.clock import iso
from shared.contracts import RUN_FINAL
from shared.db.models import Alert, Job, Run, SnapshotLedger, Task
from shared.model.live import public_phase
from shared.model.schedules import Schedule
from shared.model.slots import next_slot

if TYPE_CHECKING:
    from shared.vsphere.inventory import InventoryVM

DAY = timedelta(hours=24)
# The outcomes the dashboard counts, in the order shown (`partial`: some VMs failed)
OUTCOMES = ("succeeded", "warning", "partial", "failed", "cancelled")
ALERTS_SHOWN = 10
NEXT_SHOWN = 5


def overview(session: Session, now: datetime, threshold: float = 80.0) -> dict[str, Any]:
    """Everything the dashboard shows but the services (the gateway's presence) and the VMs."""
    return {
        "at": iso(now),
        "runs_24h": runs_since(session, now - DAY),
        "running": running(session),
        "alerts": open_alerts(session),
        "repositories": repositories(session, threshold),
        "next_runs": next_runs(session, now),
        "open_snapshots": open_snapshots(session),
    }


def runs_since(session: Session, since: datetime) -> dict[str, Any]:
    """Runs that finished since `since`, by outcome; `success_percent` is None without any."""
    query = (
        select(Run.state, func.count())
        .where(Run.finished_at >= since, Run.state.in_(RUN_FINAL))
        .group_by(Run.state)
    )
    counts = Counter({state: int(n) for state, n in session.execute(query)})
    total = sum(counts.values())
    good = counts["succeeded"] + counts["warning"]
    return {
        "since": iso(since),
        "total": total,
        "counts": {state: counts[state] for state in OUTCOMES},
        "success_percent": None if total == 0 else round(100.0 * good / total, 1),
    }


def running(session: Session) -> list[dict[str, Any]]:
    """Runs queued or running now, oldest first, each with its job's name and its tasks (with
    the public phase the event stream names, docs/api.md "Live events")."""
    runs = list(
        session.scalars(
            select(Run).where(Run.state.in_(("queued", "running"))).order_by(Run.created_at, Run.id)
        )
    )
    if not runs:
        return []
    names = dict(session.execute(select(Job.id, Job.name).where(Job.id.in_({r.job_id for r in runs}))).all())
    tasks: dict[str, list[dict[str, Any]]] = {r.id: [] for r in runs}
    for task in session.scalars(
        select(Task).where(Task.run_id.in_(list(tasks))).order_by(Task.vm_name, Task.id)
    ):
        tasks[task.run_id].append({**task_view(task), "public_phase": public_phase("task", task.phase)})
    return [{**run_view(r), "job_name": names.get(r.job_id, r.job_id), "tasks": tasks[r.id]} for r in runs]


def open_alerts(session: Session, shown: int = ALERTS_SHOWN) -> dict[str, Any]:
    """The newest open (unacknowledged) alerts and how many are open in all."""
    still_open = Alert.acknowledged_at.is_(None)
    total = int(session.scalar(select(func.count()).select_from(Alert).where(still_open)) or 0)
    rows = session.scalars(select(Alert).where(still_open).order_by(Alert.created_at.desc(), Alert.id.desc()))
    return {"total": total, "alerts": [alerts.alert_view(a) for a in rows.fetchmany(shown)]}


def repositories(session: Session, threshold: float) -> list[dict[str, Any]]:
    """Each repository's used and free as GET /api/v1/repositories shows them (its latest
    sample), with `over`: its used share reached the threshold the usage alert uses."""
    out = []
    for seen in usage.brief(session):
        percent = seen["used_percent"]
        used = None if seen["total"] is None or seen["free"] is None else seen["total"] - seen["free"]
        over = percent is not None and percent >= threshold
        out.append({**seen, "used": used, "threshold": threshold, "over": over})
    return out


def next_runs(session: Session, now: datetime, shown: int = NEXT_SHOWN) -> list[dict[str, Any]]:
    """The next slots of enabled scheduled jobs after `now` (one per job), soonest first."""
    found = []
    rows = session.execute(select(Job.id, Job.name, Job.schedule).where(Job.enabled.is_(True))).all()
    for job_id, name, raw in rows:
        if not raw:
            continue
        try:
            schedule = Schedule.model_validate(raw)
            slot = next_slot(schedule, now)  # as the scheduler counts (clock changes: shared.model.slots)
        except ValueError:  # NeverFires, or a schedule this version cannot read: no next run
            continue
        found.append({"job_id": job_id, "job_name": name, "at": iso(slot), "schedule": schedule.describe(),
                      "timezone": schedule.timezone})  # fmt: skip
    found.sort(key=lambda r: (r["at"], r["job_name"]))
    return found[:shown]


def open_snapshots(session: Session) -> dict[str, Any]:
    """The snapshots vbm holds open now, from the snapshot ledger (requested, created, being
    removed, or stuck): 0 when nothing runs and every cleanup succeeded."""
    rows = session.execute(
        select(SnapshotLedger.state, func.count())
        .where(SnapshotLedger.state.in_(ledger.OPEN))
        .group_by(SnapshotLedger.state)
    ).all()
    by_state = {state: int(n) for state, n in rows}
    return {"total": sum(by_state.values()), "by_state": by_state}


def protection(session: Session, inventories: Mapping[str, Iterable[InventoryVM] | None]) -> dict[str, Any]:
    """Which VMs of the inventories (by vCenter; None: that vCenter did not answer) an enabled
    job holds now (its VMs and selectors resolved as a run would): protected and unprotected."""
    from shared.vsphere import selection

    listed = {name: list(vms) if vms is not None else None for name, vms in inventories.items()}
    held: set[tuple[str, str]] = set()
    for job in session.scalars(select(Job).where(Job.enabled.is_(True))):
        held.update((c.vcenter, c.moref) for c in selection.resolve(selection.of_job(job), listed))
    vms = [vm for found in listed.values() for vm in found or [] if not vm.template]
    unprotected = sorted(
        (vm for vm in vms if (vm.vcenter, vm.moref) not in held), key=lambda v: (v.vcenter, v.name)
    )
    return {
        "total": len(vms),
        "protected": len(vms) - len(unprotected),
        "unprotected": len(unprotected),
        "unprotected_names": [vm.name for vm in unprotected[:10]],
        "unreachable": sorted(name for name, found in listed.items() if found is None),
    }
