"""Reading disks over the datastore HTTP API, against the lab, with its download faults."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lab.launcher import Lab
from shared.settings import VCenterSettings
from shared.vsphere import VCenter
from shared.vsphere.datastore import DatastoreHTTP, DownloadError, RetryPolicy

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


async def test_read_into_fills_the_callers_buffer(lab: Lab) -> None:
    http, vc = await client(lab)
    path, content, capacity = flat(lab, n=1)
    disk = http.disk("DC0", "LocalDS_0", path, capacity)
    buf = memoryview(bytearray(4 * MIB))
    try:
        for off, n in [(0, 4 * MIB), (capacity - 3072, 3072), (MIB - 1, 2)]:
            await disk.read_into(off, buf[:n])
            assert buf[:n] == content[off : off + n]
        with pytest.raises(ValueError, match="outside"):
            await disk.read_into(capacity - 1, buf[:2])
    finally:
        await http.close()
        vc.close()


async def test_cancelling_a_hung_read_ends_it_at_once(lab: Lab) -> None:
    """A stalled transfer with a long stall timeout: cancel frees the thread and the socket."""
    http, vc = await client(lab, stall_timeout=60.0, connections=1)
    path, content, capacity = flat(lab)
    disk = http.disk("DC0", "LocalDS_0", path, capacity)
    buf = memoryview(bytearray(MIB))
    try:
        lab.download_fault("stall", path=path, after_bytes=100, count=1)
        read = asyncio.create_task(disk.read_into(0, buf))
        await asyncio.sleep(0.5)
        assert not read.done()
        t0 = asyncio.get_running_loop().time()
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        lab.clear_faults()
        # the one pool thread is free again: the next read does not wait for the stalled one
        assert await asyncio.wait_for(disk.read(0, MIB), 5) == content[:MIB]
        assert asyncio.get_running_loop().time() - t0 < 5
    finally:
        await asyncio.wait_for(http.close(), 5)
        vc.close()


async def test_close_aborts_reads_in_flight(lab: Lab) -> None:
    http, vc = await client(lab, stall_timeout=60.0)
    path, _, capacity = flat(lab)
    disk = http.disk("DC0", "LocalDS_0", path, capacity)
    try:
        lab.download_fault("stall", path=path, after_bytes=100)
        read = asyncio.create_task(disk.read(0, MIB))
        await asyncio.sleep(0.5)
        await asyncio.wait_for(http.close(), 5)  # not 60 s
        with pytest.raises(DownloadError):
            await asyncio.wait_for(read, 5)
    finally:
        lab.clear_faults()
        vc.close()


async def test_a_refused_session_cookie_means_a_new_login(lab: Lab) -> None:
    """vCenter answers 401 once its session expired: log in again (a new cookie) and go on."""
    http, vc = await client(lab, retry=RetryPolicy(attempts=3, first_delay=0.01))
    asked = 0
    inner = http._cookie

    async def counting() -> str:
        nonlocal asked
        asked += 1
        return await inner()

    http._cookie = counting
    path, content, capacity = flat(lab)
    try:
        disk = http.disk("DC0", "LocalDS_0", path, capacity)
        assert await disk.read(0, 4096) == content[:4096]
        lab.download_fault("fail", path=path, status=401, count=1)
        assert await disk.read(4096, 4096) == content[4096:8192]
        assert asked == 2
    finally:
        await http.close()
        vc.close()


class TlsProxy:
    """TLS in front of the lab (as ESXi and vCenter serve it), with a throwaway CA."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        import trustme

        self.ca = trustme.CA()
        self.lab = lab
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(self.ctx)
        self.ca_file = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ctx)
        port = self.server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.lab.port)
        except OSError:
            writer.close()
            return
        self.writers.append(up_w)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := await src.read(1 << 18):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer), return_exceptions=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in self.writers:
            w.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await w.wait_closed()


async def test_https_reads_and_certificate_checks(lab: Lab, tmp_path: Path) -> None:
    proxy = TlsProxy(lab, tmp_path)
    base = await proxy.start()
    vc = VCenter(
        VCenterSettings(
            name="lab", url=lab.sdk_url, username=lab.username, password=lab.password, verify_tls=False
        )
    )

    async def cookie() -> str:
        return await asyncio.to_thread(vc.session_cookie)

    path, content, capacity = flat(lab, n=1)
    loose = DatastoreHTTP(base, cookie, verify_tls=False)
    strict = DatastoreHTTP(base, cookie, verify_tls=True, retry=RetryPolicy(attempts=3, first_delay=0.01))
    trusting = DatastoreHTTP(base, cookie, ca_file=str(proxy.ca_file))
    try:
        buf = memoryview(bytearray(2 * MIB))
        await loose.disk("DC0", "LocalDS_0", path, capacity).read_into(MIB, buf)
        assert buf == content[MIB : 3 * MIB]
        assert await trusting.disk("DC0", "LocalDS_0", path, capacity).read(0, 100) == content[:100]
        with pytest.raises(DownloadError, match="certificate") as exc:
            await strict.disk("DC0", "LocalDS_0", path, capacity).read(0, 100)
        assert not exc.value.retryable  # an untrusted certificate does not get better by retrying
    finally:
        for c in (loose, strict, trusting):
            await c.close()
        vc.close()
        await proxy.stop()


async def _pieces(data: bytes, size: int = MIB, delay: float = 0.0) -> AsyncIterator[bytes]:
    for off in range(0, len(data), size):
        if delay:
            await asyncio.sleep(delay)
        yield data[off : off + size]


async def test_put_file_uploads_and_reads_back(lab: Lab) -> None:
    http, vc = await client(lab)
    data = os.urandom(3 * MIB + 5)
    try:
        await http.put_file("DC0", "LocalDS_0", "vm1/uploaded.bin", _pieces(data), len(data))
        assert (Path(lab.datastore_dir) / "vm1" / "uploaded.bin").read_bytes() == data
        disk = http.disk("DC0", "LocalDS_0", "vm1/uploaded.bin", len(data))
        assert await disk.read(MIB, 10) == data[MIB : MIB + 10]
        with pytest.raises(DownloadError, match="gave 3145733 of 4000000 bytes") as exc:
            await http.put_file("DC0", "LocalDS_0", "vm1/short.bin", _pieces(data), 4_000_000)
        assert not exc.value.retryable
    finally:
        await http.close()
        vc.close()


async def test_cancelling_an_upload_frees_its_thread(lab: Lab) -> None:
    http, vc = await client(lab, connections=1)
    data = bytes(8 * MIB)
    try:
        up = asyncio.create_task(
            http.put_file("DC0", "LocalDS_0", "vm1/slow.bin", _pieces(data, delay=0.3), len(data))
        )
        await asyncio.sleep(0.5)
        up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await up
        # the only pool thread is free for the next request
        await asyncio.wait_for(http.put_file("DC0", "LocalDS_0", "vm1/ok.bin", _pieces(b"x" * 10), 10), 5)
    finally:
        await asyncio.wait_for(http.close(), 5)
        vc.close()
