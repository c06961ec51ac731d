"""kill -9 of each service (and a NATS restart) in the middle of a run: after the restart the run
ends (succeeded or cleanly failed), no snapshot is left, and every restore point the repository
shows is complete, byte-identical, and the only one of its task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from shared.db.models import Task
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_faults import MIB, disks, eventually, small_spec, transferring

SETTINGS = {"VBM_PIPELINE__SNAPSHOT_TIMEOUT": "5", "VBM_PIPELINE__TRANSFER_STALL": "4"}


async def finish(p: Pipeline, run_id: str, content: dict[tuple[str, int], bytes], *, ok: bool) -> None:
    p.lab.clear_faults()
    run = await p.wait_run(run_id, timeout=60)
    if ok:
        assert run.state == "succeeded", f"{p.dump(run_id)}\n{p.logs()}"
        (rp,) = p.restore_points(run_id)
        assert rp.verify_state == "ok"
    else:
        assert run.state in ("succeeded", "failed"), p.dump(run_id)
        for task in p.tasks(run_id):
            assert task.state == "succeeded" or task.error, p.dump(run_id)
    await eventually(lambda: not p.open_ledger(), timeout=30, what="the ledger closes")
    p.assert_clean()
    ids = await p.check_repository(content)
    assert {r.id for r in p.restore_points(run_id)} <= set(ids)


def verifying(task: Task) -> bool:
    return task.phase == "verify"


@pytest.mark.parametrize("victim", ["snapshotter", "mover", "notifier"])
async def test_kill_mid_transfer(pipeline_factory: Callable[..., Pipeline], victim: str) -> None:
    """The task is in transfer, the mover is mid-read (a stalled download): kill -9 one service."""
    p = pipeline_factory(small_spec(), **SETTINGS)
    p.start()
    job = p.create_job(f"kill-{victim}", ["web"])
    content = disks(p)
    p.lab.download_fault("stall", path="web-flat.vmdk", after_bytes=MIB, count=1)
    run_id = await p.run_job(job)
    await p.wait_task(run_id, transferring)
    await asyncio.sleep(0.5)
    proc = p.procs[victim]
    proc.kill()
    if victim == "notifier":
        # nobody watches the deadline while it is dead: the restarted one must fail the task
        await asyncio.sleep(5)
        proc.start()
        task = await p.wait_task(run_id, lambda t: t.state == "failed", timeout=15)
        assert "deadline passed in phase transfer" in (task.error or ""), task.error
    else:
        p.lab.clear_faults()
        proc.start()
    await finish(p, run_id, content, ok=victim == "snapshotter")


async def test_kill_snapshotter_right_after_snapshot(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(small_spec(), **SETTINGS)
    p.start()
    job = p.create_job("kill-snap", ["web"])
    content = disks(p)
    run_id = await p.run_job(job)
    await p.wait_task(run_id, lambda t: t.phase != "snapshot")
    p.procs["snapshotter"].kill()
    await asyncio.sleep(1)
    p.procs["snapshotter"].start()
    await finish(p, run_id, content, ok=True)


async def test_kill_verifier_before_verify(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(small_spec(), **SETTINGS)
    p.start()
    job = p.create_job("kill-verifier", ["web"])
    content = disks(p)
    p.procs["verifier"].kill()
    run_id = await p.run_job(job)
    await p.wait_task(run_id, verifying)
    await eventually(lambda: not p.lab.snapshots("web"), what="snapshot removed once the data is safe")
    p.procs["verifier"].start()
    await finish(p, run_id, content, ok=True)


async def test_nats_restart_mid_transfer(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(small_spec(), VBM_PIPELINE__SNAPSHOT_TIMEOUT="5", VBM_PIPELINE__TRANSFER_STALL="15")
    p.start()
    job = p.create_job("nats", ["web"])
    content = disks(p)
    p.lab.download_fault("stall", path="web-flat.vmdk", after_bytes=MIB, count=1)
    run_id = await p.run_job(job)
    await p.wait_task(run_id, transferring)
    p.nats.kill()
    await asyncio.sleep(1)
    p.lab.clear_faults()  # the transfer completes while NATS is down: its events wait in the outbox
    await asyncio.sleep(1)
    p.nats.restart()
    await finish(p, run_id, content, ok=True)
    # the bus works after the restart
    run2 = await p.wait_run(await p.run_job(job))
    assert run2.state == "succeeded", p.dump(run2.id)
    p.assert_clean()
    await p.check_repository(content)


async def test_catalog_write_fails_after_repository_commit(pipeline_factory: Callable[..., Pipeline]) -> None:
    """The mover dies (here: its database write fails) between committing the restore point to
    the repository and recording it in the catalog; the redelivery must not add a second one."""
    from sqlalchemy import text

    p = pipeline_factory(small_spec(), **SETTINGS)
    p.start()
    job = p.create_job("catalog", ["web"])
    content = disks(p)
    with p.engine.begin() as c:
        c.execute(
            text(
                "CREATE TRIGGER vbm_test_fail BEFORE INSERT ON restore_points"
                " BEGIN SELECT RAISE(ABORT, 'injected: the database went away'); END"
            )
        )
    run_id = await p.run_job(job)
    manifests = p.repo_dir / "manifests"
    await eventually(lambda: manifests.is_dir() and any(manifests.iterdir()), what="a manifest")
    await asyncio.sleep(0.5)  # the catalog write right after it fails
    with p.engine.begin() as c:
        c.execute(text("DROP TRIGGER vbm_test_fail"))
    await finish(p, run_id, content, ok=True)
    assert len(await p.check_repository(content)) == 1
