"""`python -m bench.ui [--points N] [--reps R] [--no-lab]`: how fast the web UI's pages render.

The gateway (the real app, on a loopback port, with its own NATS) over a fresh SQLite catalog
of N restore points (default 1,000: bench/catalog.py's fill, 200 VMs of 10 jobs), the 10 jobs
with schedules, a day of runs (one running with a task per VM), open alerts, a delivery log;
the lab as vCenter (the dashboard's VMs fragment and the VMs page ask it) unless `--no-lab`.
Logged in as an admin through /login, it times each page's GET (the whole answer read, as a
browser does: the catalog's queries, the template, the HTML), against a baseline measured in
the same run: `GET /api/v1/backups?limit=50` (the catalog's page of the REST API). Each figure
is the median of R requests after one warm-up; a page the build does not have (404) is skipped
with a line saying so. Goal (issue 20): every page under 300 ms with 1,000 restore points.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.catalog import fill

PAGES = (
    "/dashboard",
    "/dashboard/running",
    "/dashboard/vms",
    "/alerts",
    "/notifications",
    "/backups",
    "/runs",
    "/jobs",
    "/vms",
)
BASELINE = "/api/v1/backups?limit=50"
GOAL_MS = 300.0
NAME, PASSWORD = "bench", "a bench pass phrase 1"


def seed(sessions: Any, points: int, vms: int = 200) -> None:
    """Beside the restore points: the jobs they name (scheduled), a day of runs with one running,
    alerts, deliveries and a usage sample; the snapshot ledger holds nothing open."""
    from shared.catalog import alerts, users
    from shared.catalog.jobs import job_row
    from shared.db.models import Notification, Run, Task
    from shared.db.usage import UsageSample
    from shared.model.access import Role
    from shared.model.jobs import JobSpec, VMRef
    from shared.runtime.service import utcnow
    from shared.settings_access import SecuritySettings

    now = utcnow()
    fill(sessions, points)
    with sessions.begin() as s:
        users.add(s, NAME, Role.ADMIN, now, SecuritySettings(), PASSWORD)
        for j in range(10):
            mine = [
                VMRef(moref=f"vm-{v}", name=f"app{v:03d}", vcenter=f"vc{v % 2 + 1}")
                for v in range(j, vms, 10)
            ]
            job = job_row(JobSpec(name=f"job-{j}", vcenter="vc1", vms=tuple(mine)), f"job-{j}", now, "/repo")
            job.schedule = {"kind": "preset", "preset": "daily", "at": f"{j:02d}:30", "timezone": "UTC"}
            s.add(job)
        s.flush()
        for i in range(points // vms):
            at = now - timedelta(hours=i % 48)
            s.add(Run(id=f"run-{i}", job_id=f"job-{i % 10}", trigger="schedule", created_at=at,
                      state=("succeeded", "warning", "failed")[i % 3], finished_at=at))  # fmt: skip
        s.add(Run(id="run-now", job_id="job-0", trigger="schedule", state="running", created_at=now))
        s.flush()
        for v in range(0, vms, 10):
            s.add(Task(id=f"run-now.vm-{v}", run_id="run-now", vcenter=f"vc{v % 2 + 1}", vm_moref=f"vm-{v}",
                       vm_name=f"app{v:03d}", phase="transfer", state="running", bytes_done=v << 24,
                       bytes_total=40 << 30, rate=80 << 20, created_at=now, updated_at=now))  # fmt: skip
        for a in range(30):
            alerts.raise_alert(s, key=f"bench-{a}", kind="run_failed", severity="error",
                               message=f"run-{a} failed", now=now - timedelta(minutes=a))  # fmt: skip
        for n in range(200):
            s.add(Notification(id=f"n-{n}", event=f"run.finished:run-{n}", channel="ops", outcome="failure",
                               title=f"job failed ({n})", state=("sent", "failed")[n % 2], attempts=1,
                               created_at=now - timedelta(minutes=n)))  # fmt: skip
        s.add(UsageSample(repository="/repo", day=now.date(), total=4 << 40, free=1 << 40, stored=300 << 30,
                          logical=40 << 40, sampled_at=now))  # fmt: skip


async def median_ms(http: aiohttp.ClientSession, url: str, reps: int) -> tuple[int, float]:
    async with http.get(url, allow_redirects=False) as resp:  # warm
        await resp.read()
        status = resp.status
    took = []
    for _ in range(reps):
        start = time.perf_counter()
        async with http.get(url, allow_redirects=False) as resp:
            await resp.read()
        took.append((time.perf_counter() - start) * 1000)
    return status, statistics.median(took)


async def baseline_ms(http: aiohttp.ClientSession, url: str, reps: int, width: int) -> float:
    """The median of `url` (which must answer 200), printed as the run's baseline."""
    status, took = await median_ms(http, url, reps)
    assert status == 200, f"{url}: {status}"
    print(f"{'baseline: GET ' + url:<{width}} {took:8.1f} ms")
    return took


def fresh_catalog(tmp: Path) -> tuple[str, Any, Any]:
    """A new SQLite catalog in `tmp`, at the current schema: its URL, engine and sessions."""
    from shared.db import make_engine, make_sessionmaker, upgrade

    url = f"sqlite:///{tmp / 'vbm.db'}"
    engine = make_engine(url)
    upgrade(engine)
    return url, engine, make_sessionmaker(engine)


@contextlib.asynccontextmanager
async def gateway(
    settings: Any, engine: Any, sessions: Any, nats_url: str
) -> AsyncIterator[aiohttp.ClientSession]:
    """The gateway (the real app) on a loopback port with its bus and outbox relay, and an HTTP
    client logged in to it as the bench's admin (seeded as NAME, PASSWORD); all stopped after."""
    from services.gateway.app import create_app
    from shared.runtime.bus import Bus
    from shared.runtime.outbox import Relay
    from shared.runtime.service import Context, utcnow

    bus = await Bus.connect(nats_url, "bench-gateway")
    await bus.ensure_stream()
    stop = asyncio.Event()
    relay = Relay(bus, sessions, utcnow, interval=30)
    ctx = Context("gateway", "gateway-bench", settings, bus, engine, sessions, stop, relay)
    runner = web.AppRunner(create_app(ctx))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            form = {"name": NAME, "password": PASSWORD, "next": "/dashboard"}
            async with http.post("/login", data=form, allow_redirects=False) as resp:
                assert resp.status == 303, f"log in: {resp.status} {await resp.text()}"
            yield http
    finally:
        await runner.cleanup()
        stop.set()
        relay.kick()
        await bus.close()


async def run(points: int, reps: int, lab: bool) -> int:
    from shared.settings import Settings, VCenterSettings
    from tests.plugins.nats import NatsServer

    with tempfile.TemporaryDirectory(prefix="vbm-bench-ui-") as tmp_name:
        tmp = Path(tmp_name)
        nats = NatsServer(tmp / "nats").start()
        the_lab = None
        vcenters: tuple[VCenterSettings, ...] = ()
        if lab:
            from lab.launcher import DiskSpec, LabSpec, VMSpec, start_lab

            spec = LabSpec(vms=tuple(VMSpec(f"lab{i}", (DiskSpec(1 << 20, seed=i),)) for i in range(4)))
            the_lab = start_lab(spec, tmp / "lab")
            vcenters = (VCenterSettings(name="vc1", url=the_lab.sdk_url, username=the_lab.username,
                                        password=the_lab.password, verify_tls=False),)  # fmt: skip
        url, engine, sessions = fresh_catalog(tmp)
        start = time.perf_counter()
        seed(sessions, points)
        filled = time.perf_counter() - start
        print(f"catalog: {points} restore points, 10 jobs, runs, 30 alerts, 200 deliveries in SQLite"
              f" (filled in {filled:.1f} s); vCenter: {'the lab' if lab else 'none'}")  # fmt: skip
        settings = Settings(data_dir=tmp / "data", database_url=url, vcenters=vcenters)
        worst = 0.0
        try:
            async with gateway(settings, engine, sessions, nats.url) as http:
                baseline = await baseline_ms(http, BASELINE, reps, width=44)
                details = []  # a restore point's, a run's and a job's own pages, and the job form
                for api, key, page in (("backups", "backups", "/backups/"), ("runs", "runs", "/runs/")):
                    async with http.get(f"/api/v1/{api}?limit=1") as resp:
                        rows = (await resp.json()).get(key) or []
                    details += [page + rows[0]["id"]] if rows else []
                details.append("/jobs/new")
                for path in (*PAGES, *details):
                    if path == "/dashboard/vms" and not lab:
                        print(f"{'GET ' + path:<44}  skipped: it asks vCenter (run without --no-lab)")
                        continue
                    status, took = await median_ms(http, path, reps)
                    if status == 404:
                        print(f"{'GET ' + path:<44}  skipped: no such page in this build")
                        continue
                    if status != 200:
                        print(f"{'GET ' + path:<44}  answered {status}: not timed")
                        continue
                    worst = max(worst, took)
                    print(f"{'GET ' + path:<44} {took:8.1f} ms   x{took / baseline:5.1f} of the baseline")
        finally:
            engine.dispose()
            nats.stop()
            if the_lab is not None:
                the_lab.stop()
    verdict = "ok" if worst < GOAL_MS else "TOO SLOW"
    print(f"slowest page: {worst:.1f} ms (goal: under {GOAL_MS:.0f} ms) -> {verdict}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--no-lab", action="store_true", help="no vCenter: skip the pages that ask it")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.points, args.reps, not args.no_lab))


if __name__ == "__main__":
    raise SystemExit(main())
