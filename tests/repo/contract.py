"""The backend contract: every storage backend runs these tests against a real server.

A test module subclasses `BackendContract` and provides a `backend` fixture (an empty location).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from shared.repo import Backend, ObjectMissing


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
