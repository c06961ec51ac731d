"""A transfer redelivered after its mover died resumes from its checkpoints instead of starting over."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from shared.repo import LocalBackend
from tests.pipeline.conftest import Pipeline


async def test_redelivered_transfer_resumes(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(VBM_PIPELINE__ACK_WAIT="3")
    p.start()
    before = {k: p.guest_disk("web", k) for k in (2000, 2001)}
    job = p.create_job("resume", ["web"])
    p.lab.download_fault("stall", path="web_1-flat.vmdk", after_bytes=0)  # the second disk hangs
    run_id = await p.run_job(job)
    task = await p.wait_task(run_id, lambda t: t.phase == "transfer")
    backend = LocalBackend(p.repo_dir)
    for _ in range(100):  # the first disk is done and checkpointed
        if len([i async for i in backend.list(f"checkpoints/{task.id}/2000/")]):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)
    p.procs["mover"].kill()
    p.lab.clear_faults()
    p.procs["mover"].start()

    run = await p.wait_run(run_id)
    assert run.state == "succeeded", p.dump(run_id)
    (rp,) = p.restore_points(run_id)
    windows = {d["key"]: d["stored_windows"] for d in rp.disks}
    assert windows[2000] == 0  # nothing of the first disk was read again
    for key, content in before.items():
        assert await p.read_back(rp.id, key) == content
    # the SHA-256 of a disk the mover did not read again is the verifier's (manifest.json)
    assert rp.sha256 is not None and rp.sha256["2000"]["by"] == "verifier"
    assert {int(k): v["sha256"] for k, v in rp.sha256.items()} == {
        k: hashlib.sha256(c).hexdigest() for k, c in before.items()
    }
    assert [i async for i in backend.list("checkpoints/")] == []
    p.assert_clean()
