"""The whole system on a schedule: a slot missed while everything was down runs exactly once,
and survives a restart of every process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import select

from shared.db.models import Job, Run
from tests.pipeline.conftest import Pipeline


async def test_missed_slot_runs_once_across_restarts(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory()
    job_id = p.create_job("nightly", ["web", "db"], schedule={"kind": "interval", "every_minutes": 60})
    run_id, slot = p.missed_slot(job_id)  # the job exists since before the last slot, which was missed
    p.start("scheduler", "snapshotter", "mover", "verifier", "notifier")
    await p.wait_created(run_id)
    run = await p.wait_run(run_id)
    assert run.state == "succeeded", p.dump(run_id)
    assert run.trigger == "schedule"
    assert {r.vm_name for r in p.restore_points(run_id)} == {"web", "db"}
    p.assert_clean()

    # every process restarts: the slot is not run again, history and schedule are intact
    for proc in p.procs.values():
        proc.kill()
    for proc in p.procs.values():
        proc.start()
    await asyncio.sleep(4)
    with p.sessions() as s:
        runs = list(s.scalars(select(Run).where(Run.job_id == job_id)))
        assert [r.id for r in runs] == [run_id]
        job = s.get(Job, job_id)
        assert job is not None and job.last_slot == slot and job.schedule is not None
