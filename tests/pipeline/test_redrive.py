"""The reconciler: work the stream lost is re-driven from the database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shared.contracts import STREAM_NAME
from tests.pipeline.conftest import Pipeline


async def test_lost_snapshot_ready_is_redriven(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(VBM_PIPELINE__TRANSFER_STALL="8", VBM_PIPELINE__ACK_WAIT="1")
    p.start("snapshotter", "verifier", "notifier")  # no mover yet
    before = p.guest_disk("db", 2000)
    run_id = await p.run_job(p.create_job("lost", ["db"]))
    await p.wait_task(run_id, lambda t: t.phase == "transfer")
    await asyncio.sleep(1)
    await p.bus.nc.jsm().purge_stream(STREAM_NAME)  # the stream loses what the database holds
    p.start("mover")
    run = await p.wait_run(run_id, timeout=60)
    assert run.state == "succeeded", p.dump(run_id)
    (rp,) = p.restore_points(run_id)
    assert await p.read_back(rp.id, 2000) == before
    p.assert_clean()
