"""A task's end counts once its transaction commits, never when it rolls back."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from shared.catalog import tasks
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Run, Task
from tests.observe.rows import NOW, job

LABELS = {"job": "nightly", "vm": "web", "vcenter": "vc1", "repository": "/r"}


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name, LABELS) or 0.0


def test_only_a_committed_end_counts(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vbm.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        job_id = job(s, "nightly")
        s.add(Run(id="run-1", job_id=job_id, trigger="manual", state="running", created_at=NOW))
        for vm in ("vm-1", "vm-2"):
            s.add(Task(id=f"t-{vm}", run_id="run-1", vcenter="vc1", vm_moref=vm, vm_name="web",
                       phase="verify", state="running", created_at=NOW, updated_at=NOW))  # fmt: skip
    before = counted("backup_success_total"), counted("backup_failure_total")

    with pytest.raises(RuntimeError), sessions.begin() as s:  # e.g. a Stale race later in the transaction
        task = s.get(Task, "t-vm-1")
        assert task is not None and tasks.end_task(s, task, "succeeded", NOW)
        raise RuntimeError("rolled back")
    assert (counted("backup_success_total"), counted("backup_failure_total")) == before

    with sessions.begin() as s:
        first, second = s.get(Task, "t-vm-1"), s.get(Task, "t-vm-2")
        assert first is not None and second is not None
        tasks.end_task(s, first, "succeeded", NOW)
        tasks.end_task(s, second, "failed", NOW, "vCenter said no")
        assert counted("backup_success_total") == before[0]  # not before the commit
    assert counted("backup_success_total") == before[0] + 1
    assert counted("backup_failure_total") == before[1] + 1
    with sessions.begin() as s:  # ending it again counts nothing
        first = s.get(Task, "t-vm-1")
        assert first is not None and not tasks.end_task(s, first, "succeeded", NOW)
    assert counted("backup_success_total") == before[0] + 1
    engine.dispose()
