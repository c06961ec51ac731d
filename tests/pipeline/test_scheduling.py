"""Jobs at production size: snapshots just in time, within the limits, on slow storage.

Measured from the lab's own view (its snapshot accounting and its request log), not from vbm's:
a batch of VMs much longer than `transfer_stall` backs up every VM, never has more snapshots
open (per datastore, host, VM, and in total) or more reads in flight per datastore than the
limits allow, and leaves no snapshot; a datastore that turns slow gets fewer streams within
seconds, and more again when it recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from lab.launcher import DatastoreSpec, DiskSpec, LabSpec, VMSpec
from shared.db.work import Throttle
from tests.pipeline.conftest import MIB, Pipeline

HOSTS = ("DC0_H0", "DC0_C0_H0", "DC0_C0_H1")


def batch_spec(vms: int, size: int, datastores: tuple[str, ...], bandwidth: float) -> LabSpec:
    return LabSpec(
        vms=tuple(
            VMSpec(
                f"vm-{i:02d}",
                (DiskSpec(size, seed=100 + i, layout="random"),),
                cbt=True,
                datastore=datastores[i % len(datastores)],
                host=HOSTS[i % len(HOSTS)],
            )
            for i in range(vms)
        ),
        datastores=tuple(DatastoreSpec(name, bandwidth_mbps=bandwidth) for name in datastores),
    )


def max_overlap(requests: list[dict[str, Any]], datastore: str, since_ms: float = 0) -> int:
    """The most /folder/ reads of a datastore in flight at once (from the lab's request log)."""
    edges = []
    for r in requests:
        if r["datastore"] == datastore and r["method"] == "GET" and r["start_ms"] >= since_ms:
            end = r["end_ms"] if r["end_ms"] is not None else float("inf")  # still in flight
            edges += [(r["start_ms"], 1), (end, -1)]
    now = most = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        now += step
        most = max(most, now)
    return most


async def test_a_batch_many_times_the_stall_backs_up_every_vm_within_the_limits(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    stores = ("ds-a", "ds-b")
    p = pipeline_factory(
        batch_spec(12, 3 * MIB, stores, bandwidth=16),  # ~2 MB/s per datastore: the batch takes ~10 s
        VBM_PIPELINE__TRANSFER_STALL="3",
        VBM_PIPELINE__WORKERS="1",  # one read in flight per stream: reads in flight = streams
        VBM_LIMITS__SNAPSHOTS_PER_DATASTORE="2",
        VBM_LIMITS__STREAMS_PER_DATASTORE="2",
        VBM_LIMITS__SNAPSHOTS_PER_HOST="3",
        VBM_LIMITS__LATENCY_MS="0",  # the bandwidth limit is not what this test slows down
        VBM_MOVER__STREAMS="2",
    )
    p.start()
    p.start_as("mover-2", "mover")  # two movers share the work: four streams in all
    job = p.create_job("nightly", [f"vm-{i:02d}" for i in range(12)])
    before = {f"vm-{i:02d}": p.guest_disk(f"vm-{i:02d}", 2000) for i in range(12)}
    p.lab.reset_snapshot_accounting()
    seen = p.lab.requests()
    since = seen[-1]["seq"] if seen else 0
    started = time.monotonic()
    run = await p.wait_run(await p.run_job(job), timeout=120)
    took = time.monotonic() - started
    assert run.state == "succeeded", p.dump(run.id)
    assert took > 3 * 3, f"the batch took {took:.1f}s: not long enough to prove anything"
    points = {rp.vm_name: rp for rp in p.restore_points(run.id)}
    assert sorted(points) == sorted(before)
    for name, content in before.items():
        assert await p.read_back(points[name].id, 2000) == content, name

    marks = p.lab.snapshot_accounting()
    assert marks["max_open_on_one_vm"] == 1, marks
    assert max(marks["max_open_per_datastore"].values()) <= 2, marks
    assert max(marks["max_open_per_host"].values()) <= 3, marks
    assert marks["max_open"] <= 4, marks  # never more than the movers' streams
    assert marks["max_open"] >= 3, marks  # and they did work in parallel
    requests = p.lab.requests(since=since)
    for ds in stores:
        assert max_overlap(requests, ds) <= 2, ds
    p.assert_clean()
    log = [line["message"] for line in p.run_log(run.id)]
    assert any(
        "waiting for a snapshot slot on datastore" in line or "waiting for a mover" in line for line in log
    )


@pytest.mark.timeout(240)  # a run of 20 VMs through a slowed datastore, on a shared CPU
async def test_a_slow_datastore_gets_fewer_streams_then_recovers(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(
        batch_spec(20, 4 * MIB, ("LocalDS_0",), bandwidth=16),  # ~40 s of reading in all
        VBM_PIPELINE__TRANSFER_STALL="10",
        VBM_PIPELINE__WORKERS="1",
        VBM_LIMITS__SNAPSHOTS_PER_DATASTORE="4",
        VBM_LIMITS__STREAMS_PER_DATASTORE="4",
        VBM_LIMITS__SNAPSHOTS_PER_HOST="10",
        VBM_MOVER__STREAMS="4",
    )
    p.start()
    job = p.create_job("slowing", [f"vm-{i:02d}" for i in range(20)])
    run_id = await p.run_job(job)
    # reading has begun (a 4 MiB disk is one window: its bytes show only as it ends, too briefly
    # to be seen reliably)
    await p.wait_task(run_id, lambda t: t.phase == "transfer")
    p.lab.datastore_limits("LocalDS_0", latency_ms=150)  # the datastore turns slow
    slowed_at = time.monotonic()

    def limit() -> int | None:
        with p.sessions() as s:
            row = s.scalar(select(Throttle).where(Throttle.resource == "ds:lab/LocalDS_0"))
            return row.limit_now if row is not None else None

    while (limit() or 4) > 2:
        # deadlines of behaviour, not of speed: generous, since the other test worker shares the CPU
        assert time.monotonic() - slowed_at < 30, "latency control did not lower the streams"
        await asyncio.sleep(0.2)
    lowered = time.monotonic() - slowed_at
    # from a little after the limit fell, the lab never saw more reads at once than it allows
    mark = p.lab.requests()[-1]["start_ms"] + 3000
    await asyncio.sleep(4)
    assert max_overlap(p.lab.requests(), "LocalDS_0", since_ms=mark) <= 2
    p.lab.datastore_limits("LocalDS_0", latency_ms=0)  # and recovers
    while (limit() or 4) <= 2:
        assert time.monotonic() - slowed_at < 80, "latency control did not give the streams back"
        await asyncio.sleep(0.2)
    run = await p.wait_run(run_id, timeout=120)
    assert run.state == "succeeded", p.dump(run_id)
    log = [line["message"] for line in p.run_log(run_id)]
    assert any("datastore LocalDS_0 is slow" in line for line in log), [x for x in log if "datastore" in x]
    assert any("datastore LocalDS_0 is recovering" in line for line in log), log
    assert lowered < 20
    p.assert_clean()


async def test_two_jobs_holding_one_vm_never_snapshot_it_twice(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(batch_spec(3, 2 * MIB, ("LocalDS_0",), bandwidth=8), VBM_MOVER__STREAMS="4")
    p.start()
    nightly = p.create_job("nightly", ["vm-00", "vm-01"])
    db_only = p.create_job("db-only", ["vm-01", "vm-02"])  # vm-01 is in both
    p.lab.reset_snapshot_accounting()
    first, second = await p.run_job(nightly), await p.run_job(db_only)
    runs = [await p.wait_run(r, timeout=90) for r in (first, second)]
    assert [r.state for r in runs] == ["succeeded", "succeeded"], [p.dump(r.id) for r in runs]
    marks = p.lab.snapshot_accounting()
    assert marks["max_open_on_one_vm"] == 1, marks
    waited = [line["message"] for r in runs for line in p.run_log(r.id) if "vm-01" in line["message"]]
    assert any("waiting for the backup of this VM by run" in line for line in waited), waited
    p.assert_clean()
