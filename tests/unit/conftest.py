"""The unit tier's world: a SQLite database with the current schema (made once, copied per test),
a context whose relay and vCenters are fakes, and builders for jobs, runs and tasks."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Alert, Job, Outbox, Run, SnapshotLedger, Task
from shared.runtime.service import Context
from shared.settings import PipelineSettings, Settings, VCenterSettings
from tests.unit.fakes import FakeClock, FakeRelay, FakeVCenter, FakeVCenters

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
RUN = "run-1"
TASK = f"{RUN}.vc1:vm-1"


@pytest.fixture(scope="session")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty database at the newest revision (migrating takes seconds; copying it does not)."""
    path = tmp_path_factory.mktemp("schema") / "vbm.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def sessions(schema: Path, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    path = tmp_path / "vbm.db"
    shutil.copy(schema, path)
    engine = make_engine(f"sqlite:///{path}")
    yield make_sessionmaker(engine)
    engine.dispose()


class World:
    """What a handler sees (`ctx`, the vCenters), and what a test builds and reads."""

    def __init__(self, sessions: sessionmaker[Session], tmp_path: Path) -> None:
        self.sessions = sessions
        self.clock = FakeClock(T0)
        self.relay = FakeRelay()
        self.vc = FakeVCenter("vc1")
        self.vcenters = FakeVCenters(self.vc)
        self.tmp_path = tmp_path
        self.ctx = self.context()

    def context(self, **settings: Any) -> Context:
        """A context as `shared.runtime.service.serve` builds it, but without NATS: the events
        staged stay in the outbox table, the relay counts its kicks."""
        pipeline = {"retries": 0, "retry_wait": 60, **settings.pop("pipeline", {})}
        values: dict[str, Any] = {
            "data_dir": self.tmp_path / "data",
            "vcenters": (
                VCenterSettings(name="vc1", url="https://vc1/sdk", username="u", password=SecretStr("p")),
            ),
            "pipeline": PipelineSettings(**pipeline),
            **settings,
        }
        self.ctx = Context(
            service="unit", instance="unit-1", settings=Settings(**values), bus=cast(Any, None),
            engine=cast(Any, None), sessions=self.sessions, stop=asyncio.Event(),
            relay=cast(Any, self.relay), clock=self.clock,
        )  # fmt: skip
        return self.ctx

    # building
    def add_job(self, job_id: str = "job-1", **values: Any) -> None:
        with self.sessions.begin() as s:
            s.add(
                Job(
                    **{
                        "id": job_id, "name": job_id, "vcenter": "vc1", "vms": [{"moref": "vm-1"}],
                        "selection": {}, "schedule": None, "options": {}, "repository": "/repo",
                        "retention": {}, "enabled": True, "created_at": T0, "updated_at": T0, **values,
                    }
                )
            )  # fmt: skip

    def add_run(self, run_id: str = RUN, job_id: str = "job-1", **values: Any) -> None:
        with self.sessions.begin() as s:
            s.add(Run(**{"id": run_id, "job_id": job_id, "trigger": "manual", "state": "running",
                         "created_at": self.clock(), "started_at": self.clock(), **values}))  # fmt: skip

    def add_task(self, moref: str = "vm-1", run_id: str = RUN, **values: Any) -> str:
        """A task as the dispatcher admits it: in its snapshot step, generation 1."""
        task_id = f"{run_id}.vc1:{moref}"
        now = self.clock()
        with self.sessions.begin() as s:
            s.add(
                Task(
                    **{
                        "id": task_id, "run_id": run_id, "vcenter": "vc1", "vm_moref": moref,
                        "vm_name": f"vm{moref.rsplit('-', 1)[-1]}", "phase": "snapshot", "state": "running",
                        "generation": 1, "tries": 1, "warnings": [], "datastores": ["ds1"], "host": "host-1",
                        "created_at": now, "updated_at": now, "deadline_at": now + timedelta(minutes=15),
                        **values,
                    }
                )
            )  # fmt: skip
        return task_id

    def backup(self, *morefs: str, job: dict[str, Any] | None = None, **task: Any) -> list[str]:
        """A job, its running run, and one admitted task per VM (each VM made in the fake vCenter)."""
        self.add_job(**(job or {}))
        self.add_run()
        out = []
        for moref in morefs or ("vm-1",):
            if moref not in self.vc.vms:
                self.vc.add_vm(moref)
            out.append(self.add_task(moref, **task))
        return out

    # reading
    def task(self, task_id: str = TASK) -> Task:
        with self.sessions() as s:
            task = s.get(Task, task_id)
            assert task is not None
            return task

    def run(self, run_id: str = RUN) -> Run:
        with self.sessions() as s:
            run = s.get(Run, run_id)
            assert run is not None
            return run

    def staged(self, subject: str | None = None) -> list[dict[str, Any]]:
        """The events in the outbox (payloads, in order), of one subject if given."""
        with self.sessions() as s:
            rows = s.execute(select(Outbox.subject, Outbox.payload).order_by(Outbox.id)).all()
        return [json.loads(p) | {"subject": sub} for sub, p in rows if subject is None or sub == subject]

    def ledger(self) -> list[SnapshotLedger]:
        with self.sessions() as s:
            return list(s.scalars(select(SnapshotLedger).order_by(SnapshotLedger.requested_at)))

    def alerts(self) -> list[Alert]:
        with self.sessions() as s:
            return list(s.scalars(select(Alert).order_by(Alert.created_at)))


@pytest.fixture
def world(sessions: sessionmaker[Session], tmp_path: Path) -> World:
    return World(sessions, tmp_path)
