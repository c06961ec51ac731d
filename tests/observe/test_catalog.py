"""The catalog's gauges (shared/observe/catalog.py) on a real database, and when it cannot be read."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from shared.clock import utcnow
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Replication, RestorePointRow, Run, ServiceInstance, SnapshotLedger, Task
from shared.db.usage import UsageSample
from shared.observe.catalog import CatalogCollector
from shared.observe.exposition import registry, render
from tests.observe.promtool import check_metrics, names, value
from tests.observe.rows import NOW, job


def test_an_unreadable_catalog_is_a_gauge_not_an_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables: every query fails
    try:
        text = render(registry(None, [CatalogCollector(make_sessionmaker(engine), utcnow, ["vc1"])])).decode()
    finally:
        engine.dispose()
    check_metrics(text)
    assert value(text, "vbm_catalog_up") == 0
    assert "vbm_open_snapshots" not in names(text)  # no half-read page
    assert value(text, "process_resident_memory_bytes") > 0  # the counters still go out


def point(s: Session, rp_id: str, job_id: str, hours: float, kind: str = "full", verify: str = "ok") -> None:
    """A restore point of web finished `hours` ago; it read 10 x and stored 1 x its id's length."""
    at = NOW - timedelta(hours=hours)
    s.add(
        RestorePointRow(
            id=rp_id, job_id=job_id, vcenter="vc1", vm_moref="vm-1", vm_name="web", repository="/r",
            kind=kind, disks=[], logical_bytes=100, bytes_read=10 * len(rp_id), bytes_stored=len(rp_id),
            started_at=at, finished_at=at, verify_state=verify,
        )
    )  # fmt: skip


def test_what_the_catalog_holds_now(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        nightly, old = job(s, "nightly"), job(s, "old", enabled=False)
        point(s, "rp-a", nightly, 30)
        point(s, "rp-bb", nightly, 5, kind="incremental")  # the newest good one
        point(s, "rp-ccc", nightly, 1, kind="incremental", verify="failed")  # damaged: not a success
        point(s, "rp-d", old, 0.5)  # a disabled job's VM is not watched
        s.add(Run(id="run-1", job_id=nightly, trigger="manual", state="running", created_at=NOW))
        s.add(Run(id="run-2", job_id=nightly, trigger="manual", state="queued", created_at=NOW))
        for n, (phase, state, rate) in enumerate([("transfer", "running", 5e6), ("queued", "queued", 0.0)]):
            s.add(
                Task(
                    id=f"t-{n}", run_id="run-1", vcenter="vc2", vm_moref=f"vm-{n}", vm_name=f"v{n}",
                    phase=phase, state=state, rate=rate, created_at=NOW, updated_at=NOW,
                )
            )  # fmt: skip
        for n, state in enumerate(["created", "removing", "removed"]):
            s.add(
                SnapshotLedger(
                    snapshot_name=f"vbm-{n}", vm_moref=f"vm-{n}", vcenter="vc2", vm_name=f"v{n}",
                    run_id="run-1", task_id=f"t-{n}", state=state, requested_at=NOW,
                )
            )  # fmt: skip
        for day, stored in ((1, 500), (0, 700)):
            s.add(
                UsageSample(
                    repository="/r", day=(NOW - timedelta(days=day)).date(), total=1000, free=1000 - stored,
                    stored=stored, logical=2000, sampled_at=NOW,
                )
            )  # fmt: skip
        s.add(UsageSample(repository="s3://b", day=NOW.date(), stored=9, logical=20, sampled_at=NOW))
        s.add(Replication(id="c1", restore_point_id="rp-a", target="s3://copy", state="pending",
                          created_at=NOW - timedelta(hours=2), updated_at=NOW))  # fmt: skip
        s.add(Replication(id="c2", restore_point_id="rp-a", target="s3://done", state="done",
                          created_at=NOW - timedelta(days=2), updated_at=NOW))  # fmt: skip
        for n, (seen, state) in enumerate([(NOW, "running"), (NOW - timedelta(minutes=5), "running")]):
            s.add(
                ServiceInstance(
                    instance=f"mover-{n}", service="mover", host="h", pid=n, version="0", started_at=NOW,
                    state=state, seen_at=seen,
                )
            )  # fmt: skip
    try:
        collector = CatalogCollector(sessions, lambda: NOW, ["vc1", "vc2"], timedelta(seconds=15))
        text = render(registry(None, [collector])).decode()
    finally:
        engine.dispose()
    check_metrics(text)
    web = {"job": "nightly", "vm": "web", "vcenter": "vc1", "repository": "/r"}
    assert value(text, "vbm_catalog_up") == 1
    assert value(text, "vbm_last_success_timestamp_seconds", **web) == (NOW - timedelta(hours=5)).timestamp()
    assert value(text, "backup_size_bytes", **web, kind="incremental", stage="stored") == len("rp-bb")
    assert value(text, "backup_size_bytes", **web, kind="incremental", stage="transferred") == 10 * len(
        "rp-bb"
    )
    with pytest.raises(KeyError):
        value(text, "vbm_last_success_timestamp_seconds", job="old")
    assert value(text, "vbm_open_snapshots", vcenter="vc1") == 0
    assert value(text, "vbm_open_snapshots", vcenter="vc2") == 2
    assert value(text, "vbm_runs", state="running") == value(text, "vbm_runs", state="queued") == 1
    assert value(text, "vbm_tasks", state="queued") == value(text, "vbm_tasks", state="running") == 1
    assert value(text, "vbm_transfer_rate_bytes_per_second", vcenter="vc2") == 5e6
    assert value(text, "vbm_repository_stored_bytes", repository="/r") == 700  # the newest sample
    assert value(text, "vbm_repository_used_bytes", repository="/r") == 700
    assert value(text, "vbm_repository_size_bytes", repository="/r") == 1000
    assert value(text, "vbm_repository_stored_bytes", repository="s3://b") == 9
    with pytest.raises(KeyError):  # an object store tells no size
        value(text, "vbm_repository_size_bytes", repository="s3://b")
    assert value(text, "vbm_replication_lag_seconds", target="s3://copy") == 7200
    assert value(text, "vbm_replication_lag_seconds", target="s3://done") == 0
    assert value(text, "vbm_service_up", service="mover") == 1  # the other's heartbeat is 5 min old
    assert value(text, "vbm_service_up", service="gateway") == 0
