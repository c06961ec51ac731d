"""What the web UI's Runs pages show around the API's run views (shared/catalog/runs.py): the
job's name, bytes and duration of each run in a list, and for one run its tasks with their public
phase (shared/model/live.py) and progress, what became of their snapshots (the snapshot ledger:
the no-leak promise, per VM), the copies of their restore points and the run's alerts.

The run and task dictionaries are `run_view` and `task_view`, so a page says what the REST API
says; the additions are read from the same tables in the same session."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.catalog import replication
from shared.catalog.alerts import alert_view
from shared.catalog.runs import get_run, run_view, task_view
from shared.clock import aware, iso
from shared.contracts import RUN_FINAL
from shared.db.models import Alert, Job, Replication, RestorePointRow, Run, SnapshotLedger, Task
from shared.errors import Invalid
from shared.model.live import public_phase

RUN_STATES = ("queued", "running", *RUN_FINAL)
# The steps a backup task's row shows, in order (a restore's "writing" has no place in a backup:
# the mover reads, compresses and writes in one stream, "downloading").
STEPS = ("connecting", "snapshot", "downloading", "verifying", "replicating", "done")
LABELS = {
    "queued": "Queued",
    "connecting": "Connecting",
    "snapshot": "Snapshot",
    "downloading": "Downloading",
    "writing": "Writing",
    "verifying": "Verifying",
    "replicating": "Replicating",
    "done": "Done",
}
CLEAN = ("removed", "gone")
# What a VM's failure in each phase means, and what to do, beside the error as vbm recorded it.
HINTS = {
    "queued": "The VM did not start: it waited for a limit (snapshots per host or datastore, streams)"
    " or its vCenter; the error says which.",
    "connecting": "vbm could not reach the vCenter or the VM: check the vCenter's address and account.",
    "snapshot": "vCenter did not make the VM's snapshot: check the VM in vCenter (its snapshots, the"
    " datastore's free space, a task still running on it).",
    "downloading": "Reading the VM's disks (and writing them to the repository) failed: the host or"
    " vCenter stopped answering, or the repository refused the write. The next run reads the disks again.",
    "verifying": "The new restore point did not read back as written: the repository may be damaged."
    " Verify the repository's restore points.",
    "replicating": "The copy to a secondary repository failed; the restore point in the primary one is good.",
    "done": "The backup was written but a last step failed.",
}


def check_state(state: str | None) -> None:
    """Invalid (a 4xx) for a run state filter that no run can have."""
    if state and state not in RUN_STATES:
        raise Invalid("state", f"{state[:40]!r} is not one of {', '.join(RUN_STATES)}", where="query")


def percent(done: int, total: int, finished: bool = False) -> int:
    if finished and total and done >= total:
        return 100
    if total <= 0:
        return 100 if finished else 0
    return max(0, min(100, int(done * 100 / total)))


def _seconds(start: datetime | None, end: datetime | None, now: datetime) -> int | None:
    if start is None:
        return None
    return max(0, int((aware(end or now) - aware(start)).total_seconds()))


def list_rows(session: Session, runs: Iterable[Run], now: datetime) -> list[dict[str, Any]]:
    """A list's runs as `run_view`s with the job's name, the VMs, bytes moved and stored, the
    progress of a running one and the duration (so far)."""
    runs = list(runs)
    ids = [r.id for r in runs]
    sums: dict[str, tuple[int, int, int, int]] = {}
    if ids:
        rows = session.execute(
            select(
                Task.run_id,
                func.count(),
                func.coalesce(func.sum(Task.bytes_done), 0),
                func.coalesce(func.sum(Task.bytes_total), 0),
                func.coalesce(func.sum(Task.bytes_stored), 0),
            )
            .where(Task.run_id.in_(ids))
            .group_by(Task.run_id)
        )
        sums = {run_id: (int(n), int(d), int(t), int(s)) for run_id, n, d, t, s in rows}
    names = _job_names(session, {r.job_id for r in runs})
    out = []
    for run in runs:
        vms, done, total, stored = sums.get(run.id, (0, 0, 0, 0))
        view = run_view(run)
        out.append(
            view
            | {
                "job_name": names.get(run.job_id, run.job_id),
                "vms": vms,
                "bytes_done": done,
                "bytes_total": total,
                "bytes_stored": stored,
                "percent": percent(done, total, view["finished"]),
                "duration_s": _seconds(run.started_at, run.finished_at, now),
            }
        )
    return out


def _job_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    return {i: n for i, n in session.execute(select(Job.id, Job.name).where(Job.id.in_(ids)))}


def job_choices(session: Session) -> list[tuple[str, str]]:
    """(id, name) of every job, by name: the Runs list's job filter."""
    return [(i, n) for i, n in session.execute(select(Job.id, Job.name).order_by(Job.name))]


def snapshot_view(entry: SnapshotLedger) -> dict[str, Any]:
    return {
        "name": entry.snapshot_name,
        "vm_name": entry.vm_name,
        "task_id": entry.task_id,
        "state": entry.state,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "requested_at": iso(entry.requested_at),
        "removed_at": iso(entry.removed_at),
        "left": entry.state not in CLEAN,
    }


def cleanup(snapshots: list[dict[str, Any]], finished: bool) -> dict[str, str]:
    """What became of some snapshots, in one word (`kind`: ok, running, failed, none) and a sentence."""
    if not snapshots:
        return {"kind": "none", "text": "No snapshot was taken." if finished else "No snapshot yet."}
    stuck = [s for s in snapshots if s["left"] and (s["state"] == "stuck" or s["attempts"])]
    if stuck:
        s = stuck[0]
        return {
            "kind": "failed",
            "text": f"Snapshot {s['name']} is left on the VM: removing it failed {s['attempts']} time(s)"
            f" ({s['last_error'] or 'no reason given'}). vbm keeps trying; an alert names it.",
        }
    open_ = [s for s in snapshots if s["left"]]
    if open_:
        s = open_[0]
        if s["state"] == "requested":
            what = (
                "was asked for: vbm makes sure it did not appear late, and removes it if it did"
                if finished
                else "is being made"
            )
        else:
            what = (
                "is being removed"
                if finished or s["state"] == "removing"
                else "is open while the disks are read"
            )
        return {"kind": "running", "text": f"Snapshot {s['name']} {what}."}
    removed = [s for s in snapshots if s["state"] == "removed"]
    if removed:
        return {"kind": "ok", "text": f"Snapshot removed: none left behind ({len(removed)} removed)."}
    return {"kind": "ok", "text": "The snapshot never appeared on the VM: none left behind."}


def run_page(session: Session, run_id: str, now: datetime) -> dict[str, Any]:
    """One run as its page shows it: `run_view` with the job's name, progress and duration, its
    tasks (`task_view` with the public phase, steps and their snapshots), the snapshot clean-up
    of the run, the copies of its restore points and its alerts. NotFound for an unknown run."""
    run, tasks = get_run(session, run_id)
    view = run_view(run)
    entries = [
        snapshot_view(e)
        for e in session.scalars(
            select(SnapshotLedger)
            .where(SnapshotLedger.run_id == run_id)
            .order_by(SnapshotLedger.requested_at)
        )
    ]
    points = [t.restore_point_id for t in tasks if t.restore_point_id]
    copies: dict[str, list[dict[str, Any]]] = {}
    disks: dict[str, list[dict[str, Any]]] = {}
    if points:
        for rep in session.scalars(
            select(Replication)
            .where(Replication.restore_point_id.in_(points))
            .order_by(Replication.created_at)
        ):
            copies.setdefault(rep.restore_point_id, []).append(replication.view(rep))
        for rp in session.scalars(select(RestorePointRow).where(RestorePointRow.id.in_(points))):
            disks[rp.id] = list(rp.disks or [])
    rows = []
    for task in tasks:
        t = task_view(task)
        phase = public_phase("task", task.phase) or "queued"
        mine = copies.get(task.restore_point_id or "", [])
        if phase == "done" and any(c["state"] in ("pending", "running") for c in mine):
            phase = "replicating"
        snaps = [e for e in entries if e["task_id"] == task.id]
        ended = task.state in ("succeeded", "failed", "cancelled")
        rows.append(
            t
            | {
                "public_phase": phase,
                "hint": HINTS.get(phase, "") if task.state == "failed" else "",
                "phase_label": LABELS.get(phase, phase.capitalize()),
                "steps": _steps(phase, task.state),
                "percent": percent(task.bytes_done, task.bytes_total, task.state == "succeeded"),
                "snapshots": snaps,
                "cleanup": cleanup(snaps, ended),
                "copies": mine,
                "disks": disks.get(task.restore_point_id or "", []),
            }
        )
    done = sum(t.bytes_done for t in tasks)
    total = sum(t.bytes_total for t in tasks)
    alerts = [
        alert_view(a)
        for a in session.scalars(select(Alert).where(Alert.run_id == run_id).order_by(Alert.created_at))
    ]
    return view | {
        "job_name": _job_names(session, {run.job_id}).get(run.job_id, run.job_id),
        "tasks": rows,
        "bytes_done": done,
        "bytes_total": total,
        "bytes_stored": sum(t.bytes_stored for t in tasks),
        "rate": sum(t.rate for t in tasks if t.state == "running"),
        "percent": percent(done, total, view["state"] in ("succeeded", "warning")),
        "duration_s": _seconds(run.started_at, run.finished_at, now),
        "cleanup": cleanup(entries, view["finished"]),
        "snapshots": entries,
        "alerts": alerts,
    }


def _steps(phase: str, state: str) -> list[dict[str, str]]:
    """Each step of a backup task's row: passed, current (failed, when the task failed there) or to come."""
    at = STEPS.index(phase) if phase in STEPS else -1
    out = []
    for i, step in enumerate(STEPS):
        if state == "succeeded" or i < at:
            where = "passed"
        elif i == at:
            where = "failed" if state == "failed" else "cancelled" if state == "cancelled" else "current"
        else:
            where = "later"
        out.append({"phase": step, "label": LABELS[step], "where": where})
    return out
