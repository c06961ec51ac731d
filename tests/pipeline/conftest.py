"""A whole pipeline for end-to-end tests: NATS, the lab, and the services as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from shared.catalog import ledger
from shared.catalog.jobs import job_row
from shared.catalog.runs import request_run
from shared.contracts import RUN_FINAL
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Alert, Job, RestorePointRow, Run, SnapshotLedger, Task
from shared.model.jobs import JobSpec
from shared.model.schedules import Schedule
from shared.repo import LocalBackend, Repository, read_disk
from shared.runtime.bus import Bus
from shared.runtime.outbox import Relay
from tests.plugins.nats import NatsServer
from tests.plugins.procs import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
SERVICES = ("snapshotter", "mover", "verifier", "notifier")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Pipeline:
    lab: Lab
    nats: NatsServer
    data: Path
    env: dict[str, str]
    bus: Bus
    procs: dict[str, ManagedProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = make_engine(f"sqlite:///{self.data / 'vbm.db'}")
        upgrade(self.engine)
        self.sessions = make_sessionmaker(self.engine)
        self.relay = Relay(self.bus, self.sessions, now)
        self.repo_dir = self.data / "repo"

    def start(self, *names: str) -> None:
        for name in names or SERVICES:
            self.start_as(name, name)

    def start_as(self, name: str, service: str) -> None:
        """Another process of `service` (e.g. a second mover, "mover-2")."""
        proc = ManagedProcess(
            [sys.executable, "-m", f"services.{service}"],
            name=name,
            cwd=ROOT,
            env=self.env,
            log_path=self.data / f"{name}.log",
        )
        self.procs[name] = proc.start()

    def stop(self) -> None:
        live = [proc for proc in self.procs.values() if proc.alive]
        for proc in live:  # all shut down together, not one after the other
            proc.terminate()
        for proc in live:
            proc.stop()

    async def cli(self, *args: str, timeout: float = 90) -> tuple[str, str, int]:
        """`vbm <args>` against this pipeline's settings: (stdout, stderr, exit code)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", *args,
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return out.decode(), err.decode(), proc.returncode or 0

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(40)}" for n, p in self.procs.items())

    def create_job(self, name: str, vms: list[str], **spec: Any) -> str:
        infos = [self.lab.vm(v) for v in vms]
        body = JobSpec.model_validate(
            {
                "name": name,
                "vcenter": "lab",
                "vms": [{"moref": i["moref"], "name": i["name"]} for i in infos],
                "repository": str(self.repo_dir),
                **spec,
            }
        )
        with self.sessions.begin() as s:
            job = job_row(body, f"job-{name}", now(), str(self.repo_dir))
            s.add(job)
        return job.id

    async def run_job(self, job_id: str) -> str:
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            assert job is not None
            run = request_run(s, job, trigger="manual", now=now())
            assert run is not None
            run_id = run.id
        await self.relay.publish_pending()
        return run_id

    def missed_slot(self, job_id: str) -> str:
        """Make the job's last hourly slot one it missed (the job is older than it): the scheduler
        runs it as it starts. Returns the id that run gets."""
        slot = Schedule(kind="interval", every_minutes=60).last_slot(
            now(), not_before=now() - timedelta(hours=2)
        )
        assert slot is not None
        with self.sessions.begin() as s:
            job = s.get(Job, job_id)
            assert job is not None
            job.created_at = slot - timedelta(minutes=90)
        return f"{job_id}-{slot:%Y%m%dT%H%M%SZ}", slot

    async def wait_created(self, run_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.sessions() as s:
                if s.get(Run, run_id) is not None:
                    return
            assert time.monotonic() < deadline, f"run {run_id} not created in {timeout}s\n{self.logs()}"
            await asyncio.sleep(0.2)

    async def wait_run(self, run_id: str, timeout: float = 60) -> Run:
        deadline = time.monotonic() + timeout
        while True:
            with self.sessions() as s:
                run = s.get(Run, run_id)
                if run is not None and run.state in RUN_FINAL:
                    return run
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {run_id} did not end in {timeout}s\n{self.dump(run_id)}\n{self.logs()}"
                )
            await asyncio.sleep(0.2)

    async def wait_task(self, run_id: str, pred: Callable[[Task], bool], timeout: float = 30) -> Task:
        deadline = time.monotonic() + timeout
        while True:
            with self.sessions() as s:
                for task in s.scalars(select(Task).where(Task.run_id == run_id)):
                    if pred(task):
                        return task
            if time.monotonic() > deadline:
                raise AssertionError(f"no task of {run_id} as expected\n{self.dump(run_id)}\n{self.logs()}")
            await asyncio.sleep(0.1)

    def tasks(self, run_id: str) -> list[Task]:
        with self.sessions() as s:
            return list(s.scalars(select(Task).where(Task.run_id == run_id).order_by(Task.vm_name)))

    def run_log(self, run_id: str) -> list[dict[str, Any]]:
        from shared.catalog import runlog

        with self.sessions() as s:
            return runlog.lines(s, run_id)

    def dump(self, run_id: str) -> str:
        rows = [f"{t.vm_name} {t.phase} {t.state} {t.error}" for t in self.tasks(run_id)]
        return "\n".join(rows)

    def restore_points(self, run_id: str) -> list[RestorePointRow]:
        with self.sessions() as s:
            return list(s.scalars(select(RestorePointRow).where(RestorePointRow.run_id == run_id)))

    async def read_back(self, rp_id: str, disk_key: int) -> bytes:
        repo = await Repository.open(LocalBackend(self.repo_dir))
        rp = await repo.load(rp_id)
        return b"".join([p async for p in read_disk(repo, rp, rp.disk(disk_key))])

    def open_ledger(self) -> list[SnapshotLedger]:
        with self.sessions() as s:
            return ledger.open_entries(s)

    def guest_disk(self, vm: str, key: int) -> bytes:
        disk = next(d for d in self.lab.vm(vm)["disks"] if d["key"] == key)
        return self.lab.guest_read(vm, key, 0, disk["capacity"])

    def alerts(self) -> list[Alert]:
        with self.sessions() as s:
            return list(s.scalars(select(Alert).order_by(Alert.created_at)))

    def snapshots_of(self, vm: str) -> list[str]:
        return self.lab.snapshots(vm)

    async def check_repository(self, content: dict[tuple[str, int], bytes]) -> list[str]:
        """Every restore point the repository shows reads back as `content` ((vm, disk key) ->
        bytes); at most one per task, in the repository and in the catalog. Returns their ids."""
        if not (self.repo_dir / "config").exists():
            return []
        repo = await Repository.open(LocalBackend(self.repo_dir))
        ids = await repo.restore_point_ids()
        seen: dict[tuple[str | None, str | None, str | None], str] = {}
        for rp_id in ids:
            rp = await repo.load(rp_id)
            key = (rp.run_id, rp.vcenter, rp.vm_moref)  # a VM is its vCenter and moref
            assert key not in seen, f"two restore points for one task: {seen[key]} and {rp_id}"
            seen[key] = rp_id
            for disk in rp.disks:
                data = b"".join([p async for p in read_disk(repo, rp, disk)])
                assert data == content[(rp.vm_name, disk.key)], f"{rp_id} disk {disk.key} differs"
        with self.sessions() as s:
            rows = list(s.scalars(select(RestorePointRow)))
        tasks = [r.task_id for r in rows]
        assert len(tasks) == len(set(tasks)), f"duplicate restore points in the catalog: {tasks}"
        assert {r.id for r in rows} <= set(ids), "the catalog names a restore point the repository lacks"
        return ids

    def freeze(self, name: str) -> ManagedProcess:
        """SIGSTOP a service at a moment it holds no write lock on the SQLite catalog.

        A process frozen inside a write transaction blocks every other writer (SQLite has one
        writer at a time): that is not the fault these tests simulate (a mover stuck on I/O or
        on vCenter), so the freeze is retried until the catalog is writable."""
        proc = self.procs[name]
        deadline = time.monotonic() + 10
        while True:
            proc.pause()
            db = sqlite3.connect(self.data / "vbm.db", timeout=0.2, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
                return proc
            except sqlite3.OperationalError:
                proc.resume()
                assert time.monotonic() < deadline, f"{name} holds the catalog's write lock for 10 s"
                time.sleep(0.01)
            finally:
                db.close()

    def assert_clean(self) -> None:
        """The promise: no snapshot left on any VM, nothing open in the ledger."""
        for vm in self.lab.inventory["vms"]:
            assert self.lab.snapshots(vm["name"]) == [], f"{vm['name']} still has snapshots"
        assert self.open_ledger() == []


def default_spec() -> LabSpec:
    return LabSpec(
        vms=(
            VMSpec("web", (DiskSpec(12 * MIB, seed=11), DiskSpec(5 * MIB + 3072, seed=12)), cbt=True),
            VMSpec("db", (DiskSpec(9 * MIB, seed=13, thick=True),), cbt=False),
        ),
        cbt_max_areas=4,
    )


@pytest.fixture
async def pipeline_factory(
    lab_factory: Callable[[LabSpec], Lab], nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []
    bus = await Bus.connect(nats_server.url, "pipeline-test")
    await bus.ensure_stream()

    def make(spec: LabSpec | None = None, **settings: str) -> Pipeline:
        lab = lab_factory(spec or default_spec())
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
        env.update(
            VBM_DATA_DIR=str(data),
            VBM_NATS__URL=nats_server.url,
            VBM_HEARTBEAT_INTERVAL="1",
            VBM_VCENTERS=json.dumps(
                [
                    {
                        "name": "lab",
                        "url": lab.sdk_url,
                        "username": lab.username,
                        "password": lab.password,
                        "verify_tls": False,
                    }
                ]
            ),
            VBM_PIPELINE__WATCHDOG_INTERVAL="0.5",
            VBM_PIPELINE__CLEANUP_BACKOFF="0.5",
            VBM_PIPELINE__DISPATCH_INTERVAL="0.3",
            # A failed VM ends its run at once here; tests of retries set their own.
            VBM_PIPELINE__RETRIES="0",
            VBM_SHUTDOWN_GRACE="5",
        )
        env.update(settings)
        p = Pipeline(lab=lab, nats=nats_server, data=data, env=env, bus=bus)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
        p.engine.dispose()
    await bus.close()
