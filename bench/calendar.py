"""`python -m bench.calendar [--vms N] [--days D] [--reps R]`: how fast the backup calendar renders.

The gateway (the real app, on a loopback port, with its own NATS, no vCenter) over a fresh SQLite
catalog of N VMs (default 500) in 10 jobs on 2 vCenters, each job scheduled daily, and D days
(default 365) of daily runs up to today: a run per job and day, a task per VM and day (~180,000
tasks), mostly succeeded, some with warnings, some failed; bulk inserted. Logged in as an admin
through /login, it times the GET (the whole answer read) of this month's page (counts per day and
status, planned runs to the month's end), the same filtered by a job and by a VM, this week's
page (a row per VM, 500 rows), last month and one ten months ago (whole months of
runs), and a day's panel, against a baseline
measured in the same run: `GET /api/v1/runs?limit=50`. Each figure is the median of R requests
after one warm-up. Goal (issue 21): every calendar page under 500 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.ui import NAME, PASSWORD, baseline_ms, fresh_catalog, gateway, median_ms

BASELINE = "/api/v1/runs?limit=50"
GOAL_MS = 500.0
JOBS = 10


def seed(sessions: Any, vms: int, days: int, now: datetime) -> int:
    """The jobs, a run per job and day and a task per VM and day (bulk inserts); the tasks' count."""
    from sqlalchemy import insert

    from shared.catalog import users
    from shared.catalog.jobs import job_row
    from shared.db.models import Run, Task
    from shared.model.access import Role
    from shared.model.jobs import JobSpec, VMRef
    from shared.settings_access import SecuritySettings

    tasks = 0
    with sessions.begin() as s:
        users.add(s, NAME, Role.ADMIN, now, SecuritySettings(), PASSWORD)
        for j in range(JOBS):
            mine = [
                VMRef(moref=f"vm-{v}", name=f"app{v:03d}", vcenter=f"vc{v % 2 + 1}")
                for v in range(j, vms, JOBS)
            ]
            job = job_row(JobSpec(name=f"job-{j}", vcenter="vc1", vms=tuple(mine)), f"job-{j}", now, "/repo")
            job.schedule = {"kind": "preset", "preset": "daily", "at": f"{j:02d}:30", "timezone": "UTC"}
            s.add(job)
        s.flush()
        today = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
        for d in range(days, 0, -1):
            runs, rows = [], []
            for j in range(JOBS):
                at = today - timedelta(days=d) + timedelta(hours=j, minutes=30)
                run_id = f"job-{j}-{at:%Y%m%dT%H%M}"
                runs.append({"id": run_id, "job_id": f"job-{j}", "trigger": "schedule", "slot": at,
                             "state": "succeeded", "created_at": at, "started_at": at,
                             "finished_at": at + timedelta(minutes=20)})  # fmt: skip
                for v in range(j, vms, JOBS):
                    state = "failed" if (v + d) % 97 == 0 else "succeeded"
                    warnings = ["quiesce fell back"] if (v + d) % 31 == 0 else []
                    vc = f"vc{v % 2 + 1}"
                    rows.append({"id": f"{run_id}.{vc}:vm-{v}", "run_id": run_id, "vcenter": vc,
                                 "vm_moref": f"vm-{v}", "vm_name": f"app{v:03d}", "phase": "done",
                                 "state": state, "warnings": warnings, "created_at": at, "updated_at": at,
                                 "finished_at": at + timedelta(minutes=10)})  # fmt: skip
            s.execute(insert(Run), runs)
            s.execute(insert(Task), rows)
            tasks += len(rows)
    return tasks


async def run(vms: int, days: int, reps: int) -> int:
    from shared.runtime.service import utcnow
    from shared.settings import Settings
    from tests.plugins.nats import NatsServer

    with tempfile.TemporaryDirectory(prefix="vbm-bench-calendar-") as tmp_name:
        tmp = Path(tmp_name)
        nats = NatsServer(tmp / "nats").start()
        url, engine, sessions = fresh_catalog(tmp)
        now = utcnow()
        start = time.perf_counter()
        tasks = seed(sessions, vms, days, now)
        filled = time.perf_counter() - start
        print(f"catalog: {vms} VMs in {JOBS} daily jobs, {days} days: {days * JOBS} runs, {tasks} tasks"
              f" in SQLite (filled in {filled:.1f} s)")  # fmt: skip
        settings = Settings(data_dir=tmp / "data", database_url=url)
        week = now.isocalendar()
        yesterday = now.date() - timedelta(days=1)
        last_month = now.date().replace(day=1) - timedelta(days=1)  # a whole month of runs
        year_ago = now.date().replace(day=1) - timedelta(days=300)
        pages = (
            f"/calendar?month={now:%Y-%m}",
            f"/calendar?month={now:%Y-%m}&job=job-3",
            f"/calendar?month={now:%Y-%m}&vm=app042",
            f"/calendar?month={last_month:%Y-%m}",
            f"/calendar?month={year_ago:%Y-%m}",
            f"/calendar?week={week.year}-W{week.week:02d}",
            f"/calendar?month={yesterday:%Y-%m}&day={yesterday.isoformat()}",
        )
        worst = 0.0
        try:
            async with gateway(settings, engine, sessions, nats.url) as http:
                baseline = await baseline_ms(http, BASELINE, reps, width=60)
                for path in pages:
                    status, took = await median_ms(http, path, reps)
                    if status != 200:
                        print(f"{'GET ' + path:<60}  answered {status}: not timed")
                        worst = float("inf")
                        continue
                    worst = max(worst, took)
                    print(f"{'GET ' + path:<60} {took:8.1f} ms   x{took / baseline:5.1f} of the baseline")
        finally:
            engine.dispose()
            nats.stop()
    verdict = "ok" if worst < GOAL_MS else "TOO SLOW"
    print(f"slowest calendar page: {worst:.1f} ms (goal: under {GOAL_MS:.0f} ms) -> {verdict}")
    return 0 if worst < GOAL_MS else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calendar", description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.vms, args.days, args.reps))


if __name__ == "__main__":
    raise SystemExit(main())
