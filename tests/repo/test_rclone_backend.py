"""The rclone backend, through `rclone rcd`, against a WebDAV provider (`rclone serve webdav`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.repo import Backend, ObjectMissing, Repository
from shared.repo.backends.rclone import RcloneBackend
from shared.repo.errors import RepoError
from tests.plugins.faultproxy import FaultProxy
from tests.plugins.rclone import WebDAVServer
from tests.repo.contract import FAULT_TIMEOUT, BackendContract, HTTPFaultContract, LeftoverContract


def backend_for(server: WebDAVServer, path: str, **kw: object) -> RcloneBackend:
    return RcloneBackend(f"rclone://vbmdav/{path}", env=server.remote_env(), **kw)  # type: ignore[arg-type]


class TestRcloneContract(BackendContract, LeftoverContract):
    @pytest.fixture
    def backend(self, webdav_server: WebDAVServer) -> RcloneBackend:
        self.server = webdav_server
        return backend_for(webdav_server, f"t-{time.monotonic_ns()}")

    async def seed(self, backend: Backend, keys: set[str]) -> None:
        """rclone writes an object in ~0.1 s (stat, upload, move: three WebDAV calls); the
        listing is what this test is about, so the 2,500 objects go onto the server directly."""
        assert isinstance(backend, RcloneBackend)
        root = self.server.root / backend.where.path
        for key in keys:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(key.encode())


class TestRcloneFaults(HTTPFaultContract):
    """The proxy sits between `rclone rcd` and the WebDAV server: the faults are the provider's."""

    min_backoff = 0.005  # rclone's WebDAV pacer: 10 ms, doubling up to 2 s

    @pytest.fixture
    def secrets(self, webdav_server: WebDAVServer, faulty: tuple[RcloneBackend, FaultProxy]) -> list[str]:
        obscured = webdav_server.remote_env()["RCLONE_CONFIG_VBMDAV_PASS"]
        return [webdav_server.password, obscured, faulty[0]._daemon.password]

    @pytest.fixture
    def faulty(
        self, webdav_server: WebDAVServer, fault_proxy: Callable[[str, int], FaultProxy]
    ) -> Iterator[tuple[RcloneBackend, FaultProxy]]:
        proxy = fault_proxy("127.0.0.1", webdav_server.port)
        b = RcloneBackend(
            f"rclone://vbmdav/f-{time.monotonic_ns()}",
            env=webdav_server.remote_env(address=proxy.address),
            timeout=FAULT_TIMEOUT,
            retries=2,
            attempts=2,
            backoff=0.1,
        )
        yield b, proxy
        b._daemon.stop()  # this proxy's own rclone rcd


async def test_a_repository_refreshes_and_gc_deletes_aside(webdav_server: WebDAVServer) -> None:
    b = backend_for(webdav_server, "pub", refresh_after=timedelta(0))
    repo = await Repository.init(b)
    assert (webdav_server.root / "pub" / "config").is_file()
    first = (await b.stat("config")).modified
    await asyncio.sleep(1.1)
    assert await b.exists("config")
    # plain WebDAV keeps no settable modification time: the touch is noticed to do nothing
    assert (await b.stat("config")).modified == first and not b.refreshes
    # a GC process asks before it decides (it calls no `exists` first)
    assert await backend_for(webdav_server, "pub").probe_refreshes() is False
    assert await b.delete_if_unused_since("config", datetime.now(UTC) - timedelta(minutes=1)) is None
    assert (webdav_server.root / "pub" / "config").is_file()
    assert (await b.delete_if_unused_since("config", datetime.now(UTC) + timedelta(minutes=1)) or 0) > 0
    assert not (webdav_server.root / "pub" / "config").exists()
    assert not [p for p in (webdav_server.root / "pub").rglob(".tmp-*")]
    assert repo.config.chunk_size > 0
    with pytest.raises(ObjectMissing):
        await b.get("config")


async def test_a_refused_password_and_an_unknown_remote_say_what_rclone_said(
    webdav_server: WebDAVServer,
) -> None:
    b = RcloneBackend("rclone://vbmbad/r", env=webdav_server.remote_env("vbmbad", password="wrong"))
    with pytest.raises(RepoError, match="rclone says"):
        await b.put_if_absent("k", b"x")
    b = RcloneBackend("rclone://nosuchremote/r", env={})
    with pytest.raises(RepoError, match="rclone says"):
        await b.put_if_absent("k", b"x")
    for bad in ("rclone://", "s3://a/b", "rclone://u@remote/x"):
        with pytest.raises(ValueError, match="not an rclone location"):
            RcloneBackend(bad)
