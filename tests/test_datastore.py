"""Reading disks over the datastore HTTP API, against the lab, with its download faults."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lab.launcher import Lab
from shared.datastore import DatastoreHTTP, DownloadError, RetryPolicy
from shared.settings import VCenterSettings
from shared.vsphere import VCenter

MIB = 1024 * 1024


async def client(lab: Lab, **kw: object) -> tuple[DatastoreHTTP, VCenter]:
    vc = VCenter(
        VCenterSettings(
            name="lab", url=lab.sdk_url, username=lab.username, password=lab.password, verify_tls=False
        )
    )

    async def cookie() -> str:
        return await asyncio.to_thread(vc.session_cookie)

    return DatastoreHTTP(vc.base_url, cookie, verify_tls=False, **kw), vc  # type: ignore[arg-type]


def flat(lab: Lab, vm: str = "vm1", n: int = 0) -> tuple[str, bytes, int]:
    disk = lab.vm(vm)["disks"][n]
    return disk["datastore_path"], Path(disk["flat_path"]).read_bytes(), disk["capacity"]


async def test_ranges_read_back_exactly(lab: Lab) -> None:
    http, vc = await client(lab)
    path, content, capacity = flat(lab, n=1)
    disk = http.disk("DC0", "LocalDS_0", path, capacity)
    try:
        for off, n in [(0, 4096), (capacity - 3072, 3072), (MIB - 1, 2), (0, capacity)]:
            assert await disk.read(off, n) == content[off : off + n]
        with pytest.raises(ValueError, match="outside"):
            await disk.read(capacity - 1, 2)
    finally:
        await http.close()
        vc.close()


async def test_cut_and_failed_downloads_are_retried(lab: Lab) -> None:
    http, vc = await client(lab, retry=RetryPolicy(attempts=4, first_delay=0.05))
    path, content, capacity = flat(lab)
    disk = http.disk("DC0", "LocalDS_0", path, capacity)
    try:
        lab.download_fault("cut", path=path, after_bytes=1000, count=1)
        lab.download_fault("fail", path=path, status=503, count=1)
        assert await disk.read(0, MIB) == content[:MIB]
    finally:
        await http.close()
        vc.close()


async def test_persistent_failure_names_file_and_range(lab: Lab) -> None:
    http, vc = await client(lab, retry=RetryPolicy(attempts=3, first_delay=0.05))
    path, _, capacity = flat(lab)
    disk = http.disk("DC0", "LocalDS_0", path, capacity)
    try:
        lab.download_fault("fail", path=path, status=500)
        with pytest.raises(DownloadError, match=rf"{path} bytes 0-4095 failed after 3 attempts: HTTP 500"):
            await disk.read(0, 4096)
        lab.clear_faults()
        missing = http.disk("DC0", "LocalDS_0", "vm1/nope-flat.vmdk", 10)
        with pytest.raises(DownloadError, match="does not exist") as exc:
            await missing.read(0, 10)
        assert not exc.value.retryable
    finally:
        await http.close()
        vc.close()


async def test_stalled_transfer_is_detected_and_retried(lab: Lab) -> None:
    http, vc = await client(lab, stall_timeout=1.0, retry=RetryPolicy(attempts=3, first_delay=0.05))
    path, content, capacity = flat(lab)
    disk = http.disk("DC0", "LocalDS_0", path, capacity)
    try:
        lab.download_fault("stall", path=path, after_bytes=100, count=1)
        assert await disk.read(0, MIB) == content[:MIB]
    finally:
        lab.clear_faults()
        await http.close()
        vc.close()
