"""Verify on demand: a bit flip, a missing chunk and a resized disk are found and named."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pyVmomi import vim

from shared.catalog import runs as runstore
from shared.db.models import RestorePointRow
from shared.repo import LocalBackend, Repository
from shared.repo.repository import chunk_key
from tests.pipeline.conftest import MIB, Pipeline, now
from tests.plugins.lab import connect, disconnect, disks_of, find_vm, wait_task


async def wait_verified(p: Pipeline, rp_id: str, after: float, timeout: float = 60) -> RestorePointRow:
    deadline = time.monotonic() + timeout
    while True:
        with p.sessions() as s:
            row = s.get(RestorePointRow, rp_id)
            assert row is not None
            if row.verify_how == "on demand" and row.verified_at and row.verified_at.timestamp() > after:
                return row
        if time.monotonic() > deadline:
            raise AssertionError(f"{rp_id} was not verified in {timeout}s\n{p.logs()}")
        await asyncio.sleep(0.2)


async def request(p: Pipeline, rp_id: str) -> float:
    t0 = time.time()
    with p.sessions.begin() as s:
        runstore.request_verify(s, rp_id, now())
    await p.relay.publish_pending()
    return t0


async def test_verify_on_demand_names_damage_and_resizes(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("verify", ["web"])
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (row,) = p.restore_points(run)
    assert row.verify_state == "ok" and row.verify_how == "after backup"

    # intact: on demand says ok
    row = await wait_verified(p, row.id, await request(p, row.id))
    assert (row.verify_state, row.verify_problems, row.verify_notes) == ("ok", [], [])

    repo = await Repository.open(LocalBackend(p.repo_dir))
    rp = await repo.load(row.id)
    first = next(c for c in rp.disk(2000).chunks if isinstance(c, str))
    second = next(c for c in rp.disk(2001).chunks if isinstance(c, str))
    flipped = p.repo_dir / chunk_key(first)
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x04  # one bit, in the payload
    flipped.write_bytes(bytes(data))
    (p.repo_dir / chunk_key(second)).unlink()
    si = connect(p.lab)
    try:  # and the VM's second disk grows by 2 MiB in vCenter
        vm = find_vm(si, "web")
        disk = disks_of(vm.config)[2001]
        grown = disk.capacityInBytes + 2 * MIB
        disk.capacityInBytes, disk.capacityInKB = grown, grown // 1024
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
        wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
    finally:
        disconnect(si)

    # `vbm verify --wait` asks, waits for the verifier and exits 1 naming what is wrong
    out, err, code = await p.cli("verify", row.id, "--wait", "--timeout", "60")
    assert code == 1, (out, err)
    assert f"{row.id}: failed (on demand" in out and f"problem: chunk {second}" in out
    with p.sessions() as s:
        row = s.get(RestorePointRow, row.id)
        assert row is not None
    assert row.verify_state == "failed", row.verify_problems
    problems = "\n".join(row.verify_problems)
    assert f"chunk {first}" in problems and "CRC-32" in problems, problems
    assert f"chunk {second}" in problems and "missing" in problems, problems
    assert row.id in problems  # each problem names the restore point it was found in
    assert row.verify_notes == [
        f"disk 2001 is now {grown} bytes in vCenter, {rp.disk(2001).capacity} in the backup (resized since)"
    ]
    alerts = [a for a in p.alerts() if a.kind == "verify_failed"]
    assert len(alerts) == 1 and row.id in alerts[0].message and alerts[0].vm_name == "web"
    p.assert_clean()


async def test_the_verifier_reverifies_on_its_schedule(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(VBM_VERIFY__CYCLE_SECONDS="0.5", VBM_VERIFY__ROUND_CYCLES="2")
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("reverify", ["web"])
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (row,) = p.restore_points(run)
    deadline = time.monotonic() + 30
    while True:  # a round starting after the backup ends two cycles later: about a second
        with p.sessions() as s:
            got = s.get(RestorePointRow, row.id)
            assert got is not None
            if got.verify_how == "scheduled":
                break
        assert time.monotonic() < deadline, f"not re-verified on schedule\n{p.logs()}"
        await asyncio.sleep(0.2)
    assert got.verify_state == "ok" and got.verified_at is not None and got.verified_at > row.verified_at
    p.assert_clean()
