"""A slow datastore and what clients do to it: latency before the first byte, bandwidth shared
by a datastore's downloads (changed in flight), per-datastore request accounting, the request
log, and snapshot accounting (open now, high-water marks). Real concurrent HTTP range
downloads in threads, snapshots through pyVmomi."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from lab.launcher import DatastoreSpec, DiskSpec, Lab, LabError, LabSpec, VMSpec
from tests.plugins.lab import connect, disconnect, folder_url, wait_task

MiB = 1024 * 1024
SPEC = LabSpec(
    datastores=(DatastoreSpec("LocalDS_0"), DatastoreSpec("SSD_1"), DatastoreSpec("Slow_2", latency_ms=250)),
    vms=(
        VMSpec("big", (DiskSpec(16 * MiB, seed=1, layout="random"),), host="DC0_C0_H0"),
        VMSpec("fast", (DiskSpec(4 * MiB, seed=2, layout="random"),), datastore="SSD_1", host="DC0_C0_H0"),
        VMSpec("slow", (DiskSpec(1 * MiB, seed=3),), datastore="Slow_2", host="DC0_C0_H1"),
        VMSpec("split", (DiskSpec(1 * MiB), DiskSpec(1 * MiB, datastore="SSD_1")), host="DC0_H0"),
    ),
)


@pytest.fixture
def tlab(lab_factory: Callable[[LabSpec], Lab]) -> Lab:
    return lab_factory(SPEC)


def fetch(
    url: str, start: int | None = None, length: int | None = None, method: str = "GET"
) -> tuple[int, int]:
    """Download (a range of) a file; answers (status, bytes)."""
    req = urllib.request.Request(url, method=method)
    if start is not None and length is not None:
        req.add_header("Range", f"bytes={start}-{start + length - 1}")
    with urllib.request.urlopen(req, timeout=60) as resp:
        n = 0
        while chunk := resp.read(256 * 1024):
            n += len(chunk)
        return resp.status, n


def timed_parallel(urls_ranges: list[tuple[str, int, int]]) -> list[float]:
    """Range downloads in threads, all started together; each one's duration."""
    times: list[float] = [0.0] * len(urls_ranges)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(urls_ranges))

    def run(i: int, url: str, start: int, length: int) -> None:
        try:
            barrier.wait()
            t0 = time.monotonic()
            status, n = fetch(url, start, length)
            times[i] = time.monotonic() - t0
            assert (status, n) == (206, length)
        except BaseException as e:  # collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, *ur)) for i, ur in enumerate(urls_ranges)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    return times


def test_bandwidth_is_shared_by_the_datastores_downloads(tlab: Lab) -> None:
    big = folder_url(tlab, "big/big-flat.vmdk")
    fast = folder_url(tlab, "fast/fast-flat.vmdk", "SSD_1")
    limits = tlab.datastore_limits("LocalDS_0", bandwidth_mbps=80)  # 10 MB/s
    assert limits == {"datastore": "LocalDS_0", "latency_ms": 0, "bandwidth_mbps": 80}
    tlab.reset_datastore_stats("LocalDS_0")
    # lower bounds are the pacing (strict); upper ones leave room for a busy machine
    (one,) = timed_parallel([(big, 0, 4 * MiB)])
    assert 0.36 < one < 2.0  # 4 MiB at 10 MB/s: 0.42 s (measured 0.42 s)
    four = timed_parallel([(big, i * 4 * MiB, 4 * MiB) for i in range(4)])
    assert max(four) > 1.6  # 16 MiB at 10 MB/s: the four share the rate
    assert 2.5 < max(four) / one < 6, (one, four)  # measured 4.0x
    # the lab counts a read as over once it has sent the last byte, a moment after the client
    # has it: wait for that moment (a loaded machine makes it longer)
    deadline = time.monotonic() + 10
    while (stats := tlab.datastore_stats("LocalDS_0"))["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats == {
        "datastore": "LocalDS_0",
        "in_flight": 0,
        "max_in_flight": 4,
        "requests": 5,
        "bytes": 20 * MiB,
    }
    # another datastore is not slowed (at LocalDS_0's 1 MB/s this would take 4 s)
    tlab.datastore_limits("LocalDS_0", bandwidth_mbps=8)
    t0 = time.monotonic()
    assert fetch(fast) == (200, 4 * MiB)
    assert time.monotonic() - t0 < 1.5
    assert tlab.datastore_stats("SSD_1")["requests"] == 1
    tlab.reset_datastore_stats("LocalDS_0")
    assert tlab.datastore_stats("LocalDS_0")["requests"] == 0


def test_latency_before_the_first_byte(tlab: Lab) -> None:
    url = folder_url(tlab, "slow/slow-flat.vmdk", "Slow_2")
    assert {d["name"]: d["latency_ms"] for d in tlab.datastores}["Slow_2"] == 250  # from the spec
    for method in ("GET", "HEAD"):
        t0 = time.monotonic()
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as resp:
            first = time.monotonic() - t0  # the headers are the first bytes
            resp.read()
        assert 0.25 <= first < 1.5, (method, first)
    tlab.datastore_limits("Slow_2", latency_ms=0)
    t0 = time.monotonic()
    fetch(url, 0, 4096)
    assert time.monotonic() - t0 < 0.25
    tlab.datastore_limits("LocalDS_0", latency_ms=400)
    t0 = time.monotonic()
    fetch(folder_url(tlab, "big/big.vmdk"))  # descriptors too: every /folder/ read
    assert time.monotonic() - t0 >= 0.4


def test_a_limit_changed_mid_download_takes_effect(tlab: Lab) -> None:
    tlab.datastore_limits("LocalDS_0", bandwidth_mbps=80)  # 10 MB/s
    url = folder_url(tlab, "big/big-flat.vmdk")
    with urllib.request.urlopen(url, timeout=60) as resp:
        t0 = time.monotonic()
        assert len(resp.read(2 * MiB)) == 2 * MiB
        at_80 = time.monotonic() - t0
        tlab.datastore_limits("LocalDS_0", bandwidth_mbps=16)  # 2 MB/s, for the download in flight
        t0 = time.monotonic()
        assert len(resp.read(2 * MiB)) == 2 * MiB
        at_16 = time.monotonic() - t0
        tlab.datastore_limits("LocalDS_0", bandwidth_mbps=0)  # none
        t0 = time.monotonic()
        rest = resp.read()
        unlimited = time.monotonic() - t0
    assert len(rest) == 12 * MiB
    assert 0.15 < at_80 < 1.0, at_80  # 0.21 s
    assert 0.85 < at_16 < 2.5, at_16  # 1.05 s: the new rate within 100 ms of the change
    assert unlimited < 1.5, unlimited  # 12 MiB unpaced


def test_request_log(tlab: Lab) -> None:
    last = max((r["seq"] for r in tlab.requests()), default=0)
    url = folder_url(tlab, "fast/fast-flat.vmdk", "SSD_1")
    fetch(url, 4096, 1000)
    fetch(url, method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as err:
        fetch(folder_url(tlab, "fast/nothing.vmdk", "SSD_1"))
    err.value.close()
    log = tlab.requests(since=last)
    assert [(r["method"], r["range"], r["status"], r["bytes"]) for r in log] == [
        ("GET", "bytes=4096-5095", 206, 1000),
        ("HEAD", "", 200, 0),
        ("GET", "", 404, log[2]["bytes"]),
    ]
    assert [r["seq"] for r in log] == list(range(last + 1, last + 4))
    assert all(r["datastore"] == "SSD_1" for r in log)
    assert log[0]["path"] == "/folder/fast/fast-flat.vmdk"
    assert all(r["start_ms"] <= r["end_ms"] for r in log)
    assert abs(log[0]["start_ms"] / 1000 - time.time()) < 30  # epoch milliseconds
    assert tlab.requests(since=log[-1]["seq"]) == []
    # a download in flight is logged with end_ms null
    tlab.datastore_limits("LocalDS_0", bandwidth_mbps=16)
    t = threading.Thread(target=fetch, args=(folder_url(tlab, "big/big-flat.vmdk"), 0, MiB))
    t.start()
    time.sleep(0.2)
    live = tlab.requests(since=log[-1]["seq"])
    assert [(r["path"], r["end_ms"]) for r in live] == [("/folder/big/big-flat.vmdk", None)]
    assert tlab.datastore_stats("LocalDS_0")["in_flight"] == 1
    t.join(10)
    assert tlab.requests(since=log[-1]["seq"])[0]["bytes"] == MiB


def test_bad_limit_requests(tlab: Lab) -> None:
    with pytest.raises(LabError, match="no datastore nope"):
        tlab.datastore_limits("nope", latency_ms=1)
    with pytest.raises(LabError, match=">= 0"):
        tlab.datastore_limits("SSD_1", bandwidth_mbps=-1)
    with pytest.raises(LabError, match="no datastore"):
        tlab.datastore_stats("nope")


def snapshot(si: Any, name: str, snap: str) -> Any:
    vm = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
    return wait_task(vm.CreateSnapshot_Task(snap, f"{snap} of {name}", False, False))


def test_snapshot_accounting(tlab: Lab) -> None:
    acct = tlab.snapshot_accounting()
    assert (acct["open"], acct["max_open"], acct["max_open_on_one_vm"]) == ([], 0, 0)
    si = connect(tlab)
    try:
        a1 = snapshot(si, "big", "vbm-1")
        a2 = snapshot(si, "big", "vbm-2")
        b1 = snapshot(si, "fast", "vbm-1")
        c1 = snapshot(si, "split", "vbm-1")  # disks on LocalDS_0 and SSD_1: counts on both
        opened = tlab.open_snapshots()
        assert [(o["vm"], o["name"], o["moref"]) for o in opened] == [
            ("big", "vbm-1", a1._moId),
            ("big", "vbm-2", a2._moId),
            ("fast", "vbm-1", b1._moId),
            ("split", "vbm-1", c1._moId),
        ]
        first = opened[0]
        assert (first["description"], first["datastore"], first["host"]) == (
            "vbm-1 of big",
            "LocalDS_0",
            "DC0_C0_H0",
        )
        assert first["vm_moref"] == tlab.vm("big")["moref"] and first["created"].endswith("Z")
        assert sorted(opened[3]["datastores"]) == ["LocalDS_0", "SSD_1"]
        acct = tlab.snapshot_accounting()
        assert acct["max_open"] == 4 and acct["max_open_on_one_vm"] == 2
        assert acct["max_open_per_datastore"] == {"LocalDS_0": 3, "SSD_1": 2}
        assert acct["max_open_per_host"] == {"DC0_C0_H0": 3, "DC0_H0": 1}
        assert acct["max_open_per_vm"] == {"big": 2, "fast": 1, "split": 1}
        wait_task(a2.RemoveSnapshot_Task(removeChildren=False))
        wait_task(c1.RemoveSnapshot_Task(removeChildren=True))
        acct = tlab.snapshot_accounting()
        assert [o["moref"] for o in acct["open"]] == [a1._moId, b1._moId]
        assert acct["max_open"] == 4  # high-water marks stay until a reset
        acct = tlab.reset_snapshot_accounting()
        assert acct["max_open"] == 2 and acct["max_open_per_datastore"] == {"LocalDS_0": 1, "SSD_1": 1}
        vm = si.content.searchIndex.FindByInventoryPath("DC0/vm/big")
        wait_task(vm.RemoveAllSnapshots_Task())
        snapshot(si, "slow", "vbm-9")
        acct = tlab.snapshot_accounting()
        assert [o["vm"] for o in acct["open"]] == ["fast", "slow"]
        assert acct["max_open_per_host"] == {"DC0_C0_H0": 2, "DC0_C0_H1": 1}  # 2 from before the reset
        assert acct["max_open"] == 2
    finally:
        disconnect(si)
