"""The limits that protect production, as admission counts them (docs/design.md, "Scheduling
of work"): what the VMs being backed up hold now, the movers' streams, and the datastores that
storage latency control has slowed down."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.catalog import leases
from shared.db.models import Job, ServiceInstance, Task
from shared.db.work import Throttle

THROTTLE_STALE = timedelta(minutes=10)  # a slow-down no mover confirmed for this long is over


def job_limit(job: Job, default: int) -> int:
    own = (job.options or {}).get("max_parallel_vms")
    return int(own) if own else default


def mover_streams(s: Session, now: datetime, heartbeat_interval: float) -> int:
    """The disk streams of every live mover (a heartbeat within three intervals)."""
    fresh = now - timedelta(seconds=3 * heartbeat_interval)
    total = s.scalar(
        select(func.coalesce(func.sum(ServiceInstance.capacity), 0)).where(
            ServiceInstance.service == "mover",
            ServiceInstance.state == "running",
            ServiceInstance.seen_at >= fresh,
        )
    )
    return int(total or 0)


def throttles(s: Session, now: datetime) -> dict[str, tuple[int, float]]:
    """Datastores slowed down by latency control; a limit no mover has confirmed for
    THROTTLE_STALE (every mover that measured it is gone) no longer counts."""
    rows = s.scalars(select(Throttle).where(Throttle.updated_at >= now - THROTTLE_STALE))
    return {t.resource: (t.limit_now, t.latency_ms) for t in rows}


@dataclass
class Usage:
    """What the VMs being backed up now hold: per VM, job, repository, datastore and host. A VM
    in its snapshot or transfer step holds a stream and a snapshot; a VM whose snapshot is still
    being removed (after its transfer, or after a failure) holds a snapshot only, and it counts:
    a snapshot being consolidated loads its datastore as much as one being read."""

    total: int = 0
    vms: dict[tuple[str, str], str] = field(default_factory=dict)  # -> its run
    jobs: Counter[str] = field(default_factory=Counter)
    repositories: Counter[str] = field(default_factory=Counter)  # streams per repository
    datastores: Counter[str] = field(default_factory=Counter)  # streams per datastore
    hosts: Counter[str] = field(default_factory=Counter)  # streams per host
    snap_datastores: Counter[str] = field(default_factory=Counter)  # snapshots open, any step
    snap_hosts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, busy: Any, jobs: dict[str, str], repos: dict[str, str], removing: Any = ()) -> Usage:
        usage = cls()
        for task in busy:
            job = jobs.get(task.run_id, "")
            usage.add(task, job, repos.get(job, ""))
        for task in removing:
            usage._snapshot(task)
        return usage

    def add(self, task: Task, job_id: str, repository: str) -> None:
        self.total += 1
        self.vms[(task.vcenter, task.vm_moref)] = task.run_id
        self.jobs[job_id] += 1
        if repository:
            self.repositories[leases.repository(repository)] += 1
        for ds in task.datastores or []:
            self.datastores[leases.datastore(task.vcenter, ds)] += 1
        if task.host:
            self.hosts[leases.host(task.vcenter, task.host)] += 1
        self._snapshot(task)

    def _snapshot(self, task: Task) -> None:
        for ds in task.datastores or []:
            self.snap_datastores[leases.datastore(task.vcenter, ds)] += 1
        if task.host:
            self.snap_hosts[leases.host(task.vcenter, task.host)] += 1

    def blocked(
        self, task: Task, repository: str, limits: Any, slowed: dict[str, tuple[int, float]]
    ) -> str | None:
        """Why a snapshot of this VM would break a limit now, or None. A VM is admitted only
        when its first stream will find a free lease everywhere it reads and writes, so that
        no snapshot is held open waiting for a stream."""
        for ds in task.datastores or []:
            key = leases.datastore(task.vcenter, ds)
            snaps = self.snap_datastores[key]
            if limits.snapshots_per_datastore and snaps >= limits.snapshots_per_datastore:
                return (
                    f"waiting for a snapshot slot on datastore {ds}"
                    f" ({snaps} of {limits.snapshots_per_datastore})"
                )
            streams = self.datastores[key]
            if limits.streams_per_datastore and streams >= limits.streams_per_datastore:
                return f"waiting for a stream on datastore {ds} ({streams} of {limits.streams_per_datastore})"
            if key in slowed and streams >= slowed[key][0]:
                limit, latency = slowed[key]
                return (
                    f"waiting: datastore {ds} is slow ({latency:.0f} ms to first byte), so it serves"
                    f" {limit} stream(s) until it recovers"
                )
        if task.host:
            key = leases.host(task.vcenter, task.host)
            if limits.snapshots_per_host and self.snap_hosts[key] >= limits.snapshots_per_host:
                return (
                    f"waiting for a snapshot slot on host {task.host}"
                    f" ({self.snap_hosts[key]} of {limits.snapshots_per_host})"
                )
            if limits.streams_per_host and self.hosts[key] >= limits.streams_per_host:
                held = self.hosts[key]
                return f"waiting for a stream on host {task.host} ({held} of {limits.streams_per_host})"
        if repository and limits.streams_per_repository:
            held = self.repositories[leases.repository(repository)]
            if held >= limits.streams_per_repository:
                return f"waiting for a stream to the repository ({held} of {limits.streams_per_repository})"
        return None
