"""The backend contract: every storage backend runs these tests against a real server.

A test module subclasses `BackendContract` and provides a `backend` fixture (an empty location);
a remote backend's module also subclasses `FaultContract` (`HTTPFaultContract` over HTTP) for the
network faults, through a fault proxy; one that writes through hidden `.tmp-*` names subclasses
`LeftoverContract`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.repo import Backend, ObjectMissing
from shared.repo.backend import HasLeftovers, aside_name
from shared.repo.errors import RepoError
from shared.repo.gc import clean_leftovers
from tests.plugins.faultproxy import FOREVER, FaultProxy

MiB = 1 << 20
FAULT_TIMEOUT = 1.0  # the timeout of a backend made for the fault contract (seconds)


class BackendContract:
    async def seed(self, backend: Backend, keys: set[str]) -> None:
        """Store many objects (each holding its key) for the listing test; a backend whose
        writes are slow one by one (rclone) may put them on its server directly."""
        sem = asyncio.Semaphore(32)

        async def put(key: str) -> None:
            async with sem:
                await backend.put_if_absent(key, key.encode())

        await asyncio.gather(*(put(k) for k in keys))

    async def test_put_if_absent_writes_once(self, backend: Backend) -> None:
        assert await backend.put_if_absent("a/one", b"first")
        assert not await backend.put_if_absent("a/one", b"second")
        assert await backend.get("a/one") == b"first"

    async def test_same_object_written_concurrently_is_harmless(self, backend: Backend) -> None:
        data = os.urandom(256 * 1024)
        results = await asyncio.gather(*(backend.put_if_absent("c/x", data) for _ in range(8)))
        assert results.count(True) >= 1
        assert await backend.get("c/x") == data
        assert [i.key async for i in backend.list("c/")] == ["c/x"]

    async def test_ranged_reads(self, backend: Backend) -> None:
        data = bytes(range(256)) * 64
        await backend.put_if_absent("r", data)
        assert await backend.get("r", 10, 5) == data[10:15]
        assert await backend.get("r", 16000) == data[16000:]
        assert await backend.get("r", len(data) - 3, 100) == data[-3:]

    async def test_empty_ranges_and_ranges_of_missing_objects(self, backend: Backend) -> None:
        with pytest.raises(ObjectMissing):
            await backend.get("nothing", 5, 10)
        await backend.put_if_absent("e", b"0123456789")
        assert await backend.get("e", 10) == b""  # from the end on: nothing
        assert await backend.get("e", 3, 0) == b""

    async def test_missing_objects(self, backend: Backend) -> None:
        with pytest.raises(ObjectMissing, match="nope"):
            await backend.get("nope")
        with pytest.raises(ObjectMissing):
            await backend.stat("nope")
        assert not await backend.exists("nope")
        await backend.delete("nope")  # not an error

    async def test_stat_exists_delete(self, backend: Backend) -> None:
        await backend.put_if_absent("s/obj", b"12345", durable=True)
        info = await backend.stat("s/obj")
        assert (info.key, info.size) == ("s/obj", 5)
        assert await backend.exists("s/obj")
        await backend.delete("s/obj")
        assert not await backend.exists("s/obj")
        assert await backend.put_if_absent("s/obj", b"again")

    async def test_list_large_prefix(self, backend: Backend) -> None:
        keys = {f"many/{i % 16:02x}/{i:064x}" for i in range(2500)}
        await self.seed(backend, keys)
        await backend.put_if_absent("manyother/x", b"x")
        listed = [i async for i in backend.list("many/")]
        assert {i.key for i in listed} == keys
        assert all(i.size == len(i.key) for i in listed)
        assert [i.key async for i in backend.list("many/0a/")] == sorted(
            k for k in keys if k.startswith("many/0a/")
        ) or {i.key async for i in backend.list("many/0a/")} == {k for k in keys if k.startswith("many/0a/")}

    async def test_flush_and_durable_writes(self, backend: Backend) -> None:
        await backend.put_if_absent("f/1", b"1")
        await backend.flush()
        await backend.put_if_absent("f/2", b"2", durable=True)
        assert {i.key async for i in backend.list("f/")} == {"f/1", "f/2"}

    async def test_bad_keys_are_refused(self, backend: Backend) -> None:
        for key in ("", "/abs", "a/../b"):
            with pytest.raises(ValueError):
                await backend.put_if_absent(key, b"x")


class FaultContract:
    """Network faults between a remote backend and its server (issue #8), through a FaultProxy
    (`tests/plugins/faultproxy.py`). A test module subclasses it and provides:

    - `faulty`: `(backend, proxy)`, the backend reaching its (empty) location through the proxy,
      made with `timeout=FAULT_TIMEOUT` and short backoffs, so that faults cost seconds;
    - `secrets`: strings that no error or log line may show (keys, passwords).

    A read or a write cut by a reset is retried and comes back whole; a stalled transfer and
    refused connections fail within `bound` seconds with a RepoError naming the location (`where`)
    and saying what happened, and the backend works again once the fault is gone.
    """

    bound = 10.0  # seconds a failing call may take at most (a few timeouts, with the retries)

    def where(self, backend: Backend) -> str:
        """What an error must name: the location, without its query."""
        return backend.location.split("?")[0]

    def check_error(
        self, err: BaseException, backend: Backend, secrets: list[str], caplog: pytest.LogCaptureFixture
    ) -> str:
        message = str(err)
        assert self.where(backend) in message, message
        for secret in secrets:
            assert secret not in message and secret not in caplog.text
        return message

    async def test_a_reset_mid_read_is_retried(self, faulty: tuple[Backend, FaultProxy]) -> None:
        backend, proxy = faulty
        data = os.urandom(MiB)
        assert await backend.put_if_absent("f/read", data)
        proxy.reset(200_000, "down")
        assert await backend.get("f/read") == data
        assert proxy.faults == 1
        proxy.reset(100_000, "down")
        assert await backend.get("f/read", 1000, 500_000) == data[1000:501_000]

    async def test_a_reset_mid_write_is_retried(self, faulty: tuple[Backend, FaultProxy]) -> None:
        backend, proxy = faulty
        data = os.urandom(MiB)
        proxy.reset(200_000, "up")
        await backend.put_if_absent("f/write", data)  # False only if an attempt wrote it whole
        assert proxy.faults == 1
        assert await backend.get("f/write") == data
        assert [(i.key, i.size) async for i in backend.list("f/")] == [("f/write", MiB)]

    async def test_a_stalled_transfer_fails_in_bounded_time(
        self, faulty: tuple[Backend, FaultProxy], secrets: list[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        backend, proxy = faulty
        caplog.set_level(logging.DEBUG)
        data = os.urandom(MiB)
        assert await backend.put_if_absent("f/stall", data)
        proxy.stall(100_000, "down", count=FOREVER)
        t0 = time.monotonic()
        with pytest.raises(RepoError) as err:
            await backend.get("f/stall")
        assert time.monotonic() - t0 < self.bound
        assert re.search(r"timed out|stalled", self.check_error(err.value, backend, secrets, caplog))
        proxy.clear()
        assert await backend.get("f/stall") == data

    async def test_a_stalled_write_fails_in_bounded_time(
        self, faulty: tuple[Backend, FaultProxy], secrets: list[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        backend, proxy = faulty
        caplog.set_level(logging.DEBUG)
        data = os.urandom(MiB)
        proxy.stall(100_000, "up", count=FOREVER)
        t0 = time.monotonic()
        with pytest.raises(RepoError) as err:
            await backend.put_if_absent("f/stalled", data)
        assert time.monotonic() - t0 < self.bound
        assert re.search(r"timed out|stalled", self.check_error(err.value, backend, secrets, caplog))
        proxy.clear()
        assert [i.key async for i in backend.list("f/")] == []  # nothing partial
        await backend.put_if_absent("f/stalled", data)
        assert await backend.get("f/stalled") == data

    async def test_refused_connections_fail_in_bounded_time(
        self, faulty: tuple[Backend, FaultProxy], secrets: list[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        backend, proxy = faulty
        caplog.set_level(logging.DEBUG)
        assert await backend.put_if_absent("f/ok", b"ok")
        proxy.refuse(count=FOREVER)
        t0 = time.monotonic()
        with pytest.raises(RepoError) as err:
            await backend.get("f/ok")
        assert time.monotonic() - t0 < self.bound
        assert proxy.faults >= 2  # retried
        message = self.check_error(err.value, backend, secrets, caplog)
        assert re.search(r"connection|reach", message), message
        proxy.clear()
        assert await backend.get("f/ok") == b"ok"


class HTTPFaultContract(FaultContract):
    """Faults only an HTTP server answers: throttling (503 SlowDown, 429) is retried after a
    backoff of at least `min_backoff` seconds; persistent 500s fail clearly in bounded time."""

    min_backoff = 0.05

    @pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, 1)])
    async def test_throttling_is_retried_with_backoff(
        self, faulty: tuple[Backend, FaultProxy], status: int, retry_after: int | None
    ) -> None:
        backend, proxy = faulty
        data = os.urandom(100_000)
        proxy.http_status(status, count=2, retry_after=retry_after)
        assert await backend.put_if_absent("f/slow", data)
        assert proxy.faults == 2
        assert proxy.fault_times[1] - proxy.fault_times[0] >= self.min_backoff
        proxy.http_status(status, count=1, retry_after=retry_after)
        assert await backend.get("f/slow") == data
        assert proxy.faults == 3

    async def test_persistent_server_errors_fail_in_bounded_time(
        self, faulty: tuple[Backend, FaultProxy], secrets: list[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        backend, proxy = faulty
        caplog.set_level(logging.DEBUG)
        proxy.http_status(500, count=FOREVER)
        t0 = time.monotonic()
        with pytest.raises(RepoError) as err:
            await backend.put_if_absent("f/broken", os.urandom(100_000))
        assert time.monotonic() - t0 < self.bound
        assert proxy.faults >= 2  # retried
        message = self.check_error(err.value, backend, secrets, caplog)
        assert re.search(r"500|InternalError", message), message
        proxy.clear()
        assert not await backend.exists("f/broken")
        assert [i.key async for i in backend.list("f/")] == []


class LeftoverContract:
    """Backends that write and GC-delete through hidden `.tmp-*` names (local, SFTP, rclone): what
    a dead write or a dead GC left behind is cleaned by `gc.clean_leftovers`, and an object a
    dead GC had moved aside comes back under its name (a backup may rely on it)."""

    async def test_leftovers_of_a_dead_write_and_a_dead_gc_are_cleaned(self, backend: Backend) -> None:
        assert isinstance(backend, HasLeftovers)
        lost, kept = "ab" * 32, "cd" * 32
        await backend.put_if_absent(f"chunks/ab/{aside_name(lost)}", b"lost chunk")  # GC died mid-decision
        await backend.put_if_absent(f"chunks/cd/{kept}", b"stored again")
        await backend.put_if_absent(f"chunks/cd/{aside_name(kept)}", b"stored again")
        await backend.put_if_absent("chunks/ef/.tmp-0123abcd", b"a write that died")
        assert [i.key async for i in backend.list("chunks/")] == [f"chunks/cd/{kept}"]
        assert len(await backend.leftovers()) == 3

        now = datetime.now(UTC)
        assert await clean_leftovers(backend, now - timedelta(hours=1)) == (1, 1)  # the young write stays
        assert await backend.get(f"chunks/ab/{lost}") == b"lost chunk"
        assert await backend.get(f"chunks/cd/{kept}") == b"stored again"
        assert [i.key for i in await backend.leftovers()] == ["chunks/ef/.tmp-0123abcd"]
        assert await clean_leftovers(backend, now + timedelta(hours=1)) == (1, 0)
        assert await backend.leftovers() == []
        assert {i.key async for i in backend.list("chunks/")} == {f"chunks/ab/{lost}", f"chunks/cd/{kept}"}
