"""The reconciler: work the stream lost is re-driven from the database."""

from __future__ import annotations

from collections.abc import Callable

from shared.contracts import STREAM_NAME
from tests.pipeline.conftest import Pipeline


async def test_lost_snapshot_ready_is_redriven(pipeline_factory: Callable[..., Pipeline]) -> None:
    """The mover dies mid-transfer and the stream loses its message: the notifier stages the
    task's event again once it has been quiet, and a new mover finishes the backup."""
    p = pipeline_factory(VBM_PIPELINE__TRANSFER_STALL="8", VBM_PIPELINE__ACK_WAIT="1")
    p.start()
    p.lab.datastore_limits("LocalDS_0", bandwidth_mbps=16)  # a few seconds for db's 9 MiB
    before = p.guest_disk("db", 2000)
    run_id = await p.run_job(p.create_job("lost", ["db"]))
    await p.wait_task(run_id, lambda t: t.phase == "transfer" and t.bytes_done > 0)
    p.procs["mover"].kill()  # kill -9, mid-transfer: its message is never acked
    await p.bus.nc.jsm().purge_stream(STREAM_NAME)  # and the stream loses what the database holds
    p.lab.datastore_limits("LocalDS_0", bandwidth_mbps=0)
    p.procs["mover"].restart()
    run = await p.wait_run(run_id, timeout=60)
    assert run.state == "succeeded", p.dump(run_id)
    (rp,) = p.restore_points(run_id)
    assert await p.read_back(rp.id, 2000) == before
    p.assert_clean()
