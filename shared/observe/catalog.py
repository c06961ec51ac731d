"""Metrics read from the catalog at scrape time (docs/design.md, "Metrics").

The database is the source of truth: what it already records (restore points, the snapshot
ledger, runs and tasks, usage samples, replications, service heartbeats) is read when Prometheus
scrapes, never counted in a process. So these survive restarts, agree with `vbm status` and the
web UI, and come out the same whichever process serves them. The gateway serves them (beside
its own counters); `vbm up`'s combined endpoint does too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import aware
from shared.contracts import TASK_FINAL
from shared.db.models import (
    Job,
    Replication,
    RestorePointRow,
    Run,
    ServiceInstance,
    SnapshotLedger,
    Task,
    VCenterRow,
)
from shared.db.usage import UsageSample

log = logging.getLogger(__name__)

SERVICES = ("scheduler", "snapshotter", "mover", "verifier", "notifier", "gateway")
OPEN_SNAPSHOT = ("requested", "created", "removing", "stuck")  # shared/catalog/ledger.py OPEN
WAITING = ("queued", "running")
BACKUP = ["job", "vm", "vcenter", "repository"]


class CatalogCollector(Collector):
    """Gauges of what the catalog holds now. `vcenters` names the configured vCenters (each gets
    its open-snapshot gauge, 0 when idle); `alive` is how recent a heartbeat counts as up."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime],
        vcenters: Iterable[str] = (),
        alive: timedelta = timedelta(seconds=15),
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.vcenters = tuple(vcenters)
        self.alive = alive

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration (that would query the database)

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        up = GaugeMetricFamily("vbm_catalog_up", "Whether this scrape could read the catalog (the database)")
        try:
            with self.sessions() as s:
                read = [
                    *_backups(s),
                    _open_snapshots(s, self.vcenters),
                    *_work(s),
                    *_repositories(s),
                    _replication_lag(s, now),
                    _services(s, now - self.alive),
                ]
        except SQLAlchemyError as exc:  # the counters still go out; the catalog's gauges are missing
            log.warning("metrics: the catalog could not be read: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from read


def _backups(s: Session) -> Iterator[Metric]:
    """The newest restore point of each VM of each enabled job, in each repository it went to
    (a damaged one, failed verification, does not count as a success)."""
    last = GaugeMetricFamily(
        "vbm_last_success_timestamp_seconds",
        "When a VM's newest good restore point was finished (Unix time): `time() - this` is its age",
        labels=BACKUP,
    )
    size = GaugeMetricFamily(
        "backup_size_bytes",
        "Size of a VM's newest backup: read from vCenter (stage=transferred) and stored after dedup"
        " and compression (stage=stored), by kind full/incremental",
        labels=[*BACKUP, "kind", "stage"],
    )
    rp = RestorePointRow
    good = rp.verify_state != "failed"
    key = (rp.job_id, rp.vm_name, rp.vcenter, rp.repository)
    latest = select(*key, func.max(rp.finished_at).label("at")).where(good).group_by(*key).subquery()
    same = [column == latest.c[column.key] for column in key]
    rows = s.execute(
        select(Job.name, *key[1:], rp.kind, rp.bytes_read, rp.bytes_stored, rp.finished_at)
        .join(Job, Job.id == rp.job_id)
        .join(latest, and_(*same, rp.finished_at == latest.c.at))
        .where(Job.enabled.is_(True), good)
    )
    newest = {}  # two points finished at the same instant: one of them
    for job, vm, vcenter, repository, kind, read, stored, finished in rows:
        newest[(job, vm, vcenter, repository)] = (kind, read, stored, finished)
    for labels, (kind, read, stored, finished) in sorted(newest.items()):
        last.add_metric(list(labels), aware(finished).timestamp())
        size.add_metric([*labels, kind, "transferred"], float(read))
        size.add_metric([*labels, kind, "stored"], float(stored))
    yield last
    yield size


def _open_snapshots(s: Session, configured: tuple[str, ...]) -> Metric:
    gauge = GaugeMetricFamily(
        "vbm_open_snapshots",
        "vbm's snapshots that exist or may exist on a vCenter now (the snapshot ledger): 0 when idle",
        labels=["vcenter"],
    )
    counts = dict.fromkeys(configured, 0)
    counts.update(dict.fromkeys(s.scalars(select(VCenterRow.name)), 0))
    query = select(SnapshotLedger.vcenter, func.count()).where(SnapshotLedger.state.in_(OPEN_SNAPSHOT))
    for vcenter, n in s.execute(query.group_by(SnapshotLedger.vcenter)):
        counts[vcenter] = n
    for vcenter, n in sorted(counts.items()):
        gauge.add_metric([vcenter], n)
    return gauge


def _work(s: Session) -> Iterator[Metric]:
    runs = GaugeMetricFamily("vbm_runs", "Runs waiting to start (queued) or running", labels=["state"])
    found = dict(
        s.execute(select(Run.state, func.count()).where(Run.state.in_(WAITING)).group_by(Run.state)).all()
    )
    for state in WAITING:
        runs.add_metric([state], found.get(state, 0))
    yield runs
    tasks = GaugeMetricFamily(
        "vbm_tasks",
        "VM backups not finished, by state (queued: waiting for admission or a retry)",
        labels=["state"],
    )
    query = select(Task.state, func.count()).where(Task.state.not_in(TASK_FINAL)).group_by(Task.state)
    counted = {**dict.fromkeys(WAITING, 0), **dict(s.execute(query).all())}
    for state, n in sorted(counted.items()):
        tasks.add_metric([state], n)
    yield tasks
    rate = GaugeMetricFamily(
        "vbm_transfer_rate_bytes_per_second",
        "Read rate of the backups transferring now, summed per vCenter",
        labels=["vcenter"],
    )
    rates = (
        select(Task.vcenter, func.sum(Task.rate))
        .where(Task.phase == "transfer", Task.state.not_in(TASK_FINAL))
        .group_by(Task.vcenter)
    )
    for vcenter, total in s.execute(rates):
        rate.add_metric([vcenter], float(total or 0))
    yield rate


def _repositories(s: Session) -> Iterator[Metric]:
    """From each repository's newest usage sample (the verifier's daily one, or `vbm usage`)."""
    about = {
        "size": "Capacity of the storage a repository is on (file systems that tell it)",
        "free": "Free space of the storage a repository is on (file systems that tell it)",
        "used": "Used space of the storage a repository is on: size - free",
        "stored": "Bytes of chunk objects a repository holds (after dedup and compression)",
        "logical": "Bytes of the disks its restore points describe (before dedup and compression)",
    }
    gauges = {
        k: GaugeMetricFamily(f"vbm_repository_{k}_bytes", text, labels=["repository"])
        for k, text in about.items()
    }
    newest = select(UsageSample.repository, func.max(UsageSample.day).label("day")).group_by(
        UsageSample.repository
    )
    latest = newest.subquery()
    query = select(UsageSample).join(
        latest, (UsageSample.repository == latest.c.repository) & (UsageSample.day == latest.c.day)
    )
    for row in s.scalars(query):
        label = [row.repository]
        gauges["stored"].add_metric(label, row.stored)
        gauges["logical"].add_metric(label, row.logical)
        if row.total is not None and row.free is not None:
            gauges["size"].add_metric(label, row.total)
            gauges["free"].add_metric(label, row.free)
            gauges["used"].add_metric(label, row.total - row.free)
    yield from gauges.values()


def _replication_lag(s: Session, now: datetime) -> Metric:
    gauge = GaugeMetricFamily(
        "vbm_replication_lag_seconds",
        "Age of the oldest copy to a target not yet done (0: the target is up to date)",
        labels=["target"],
    )
    lag = dict.fromkeys(s.scalars(select(Replication.target).distinct()), 0.0)
    query = (
        select(Replication.target, func.min(Replication.created_at))
        .where(Replication.state.in_(("pending", "running")))
        .group_by(Replication.target)
    )
    for target, oldest in s.execute(query):
        lag[target] = max((now - aware(oldest)).total_seconds(), 0.0)
    for target, seconds in sorted(lag.items()):
        gauge.add_metric([target], seconds)
    return gauge


def _services(s: Session, since: datetime) -> Metric:
    gauge = GaugeMetricFamily(
        "vbm_service_up",
        "Instances of each vbm service running with a recent heartbeat (0: the service is down)",
        labels=["service"],
    )
    query = (
        select(ServiceInstance.service, func.count())
        .where(ServiceInstance.state == "running", ServiceInstance.seen_at >= since)
        .group_by(ServiceInstance.service)
    )
    counts = {**dict.fromkeys(SERVICES, 0), **dict(s.execute(query).all())}
    for service, n in sorted(counts.items()):
        gauge.add_metric([service], n)
    return gauge
