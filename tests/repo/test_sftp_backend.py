"""The SFTP backend against a real SFTP server (asyncssh's, in its own process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from shared.repo import ObjectMissing, Repository
from shared.repo.backends.sftp import SFTPBackend
from shared.repo.errors import RepoError
from tests.plugins.faultproxy import FaultProxy
from tests.plugins.sftp import SFTPServer
from tests.repo.contract import FAULT_TIMEOUT, BackendContract, FaultContract, LeftoverContract


def backend_for(server: SFTPServer, path: str = "/repo", **kw: Any) -> SFTPBackend:
    return SFTPBackend(
        server.location(path), key_file=str(server.key_file), known_hosts=str(server.known_hosts), **kw
    )


class TestSFTPContract(BackendContract, LeftoverContract):
    @pytest.fixture
    async def backend(self, sftp_server: SFTPServer) -> AsyncIterator[SFTPBackend]:
        b = backend_for(sftp_server, f"/t-{time.monotonic_ns()}")
        yield b
        await b.close()


class TestSFTPFaults(FaultContract):
    """The proxy sits in front of the SSH port: every fault hits the one SSH connection the
    backend keeps, which is then opened again."""

    @pytest.fixture
    def secrets(self, sftp_server: SFTPServer) -> list[str]:
        """The private key's lines (but the first, a header every such key has)."""
        return sftp_server.key_file.read_text().splitlines()[2:-1]

    @pytest.fixture
    async def faulty(
        self, sftp_server: SFTPServer, fault_proxy: Callable[[str, int], FaultProxy], tmp_path: Path
    ) -> AsyncIterator[tuple[SFTPBackend, FaultProxy]]:
        proxy = fault_proxy("127.0.0.1", sftp_server.port)
        known_hosts = tmp_path / "known_hosts"  # the server's host key, under the proxy's port
        known_hosts.write_text(
            sftp_server.known_hosts.read_text().replace(f"]:{sftp_server.port} ", f"]:{proxy.port} ")
        )
        b = SFTPBackend(
            f"sftp://vbm@{proxy.address}/f-{time.monotonic_ns()}",
            key_file=str(sftp_server.key_file),
            known_hosts=str(known_hosts),
            timeout=FAULT_TIMEOUT,
            backoff=0.1,
        )
        yield b, proxy
        await b.close()


async def test_objects_are_published_whole_and_refreshed(sftp_server: SFTPServer) -> None:
    b = backend_for(sftp_server, "/pub")
    repo = await Repository.init(b)
    assert (sftp_server.root / "pub" / "config").is_file()
    assert not list((sftp_server.root / "pub").glob(".tmp-*"))  # the temporary names are gone
    old = time.time() - 7200
    import os

    os.utime(sftp_server.root / "pub" / "config", (old, old))
    assert await b.exists("config")  # relied on now: refreshed
    assert (sftp_server.root / "pub" / "config").stat().st_mtime > old + 3600
    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    assert await b.delete_if_unused_since("config", cutoff) is None
    assert (await b.delete_if_unused_since("config", datetime.now(UTC) + timedelta(minutes=1)) or 0) > 0
    assert not (sftp_server.root / "pub" / "config").exists()
    assert not [p for p in (sftp_server.root / "pub").iterdir() if p.name.startswith(".tmp-")]
    total, free = await b.usage()
    assert total and free is not None and total >= free
    assert repo.config.chunk_size > 0
    await b.close()


async def test_a_refused_key_a_wrong_host_and_a_dead_server_say_what_to_do(
    sftp_server: SFTPServer, private_sftp_server: SFTPServer, tmp_path: Path
) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "other").write_bytes(other.export_private_key())
    b = SFTPBackend(
        sftp_server.location(), key_file=str(tmp_path / "other"), known_hosts=str(sftp_server.known_hosts)
    )
    with pytest.raises(RepoError, match="the login was refused: check VBM_SFTP__KEY_FILE"):
        await b.exists("config")
    (tmp_path / "known_hosts").write_text(
        f"[127.0.0.1]:{sftp_server.port} {other.export_public_key().decode()}"
    )
    b = SFTPBackend(
        sftp_server.location(), key_file=str(sftp_server.key_file), known_hosts=str(tmp_path / "known_hosts")
    )
    with pytest.raises(RepoError, match="host key is not the one in"):
        await b.exists("config")
    with pytest.raises(ValueError, match="carries no password"):
        SFTPBackend("sftp://u:secret@h/r")

    b = backend_for(private_sftp_server, timeout=3)
    await b.put_if_absent("k", b"x")
    private_sftp_server.kill()
    t0 = time.monotonic()
    with pytest.raises(RepoError, match="the connection failed 3 times"):
        await b.get("k")
    assert time.monotonic() - t0 < 30
    private_sftp_server.start()  # back on the same port: the backend reconnects
    assert await b.get("k") == b"x"
    with pytest.raises(ObjectMissing):
        await b.get("nothing")
    await b.close()


def test_locations_are_checked() -> None:
    for bad in ("sftp://host/r", "sftp://u@host", "sftp:/x", "s3://a/b"):
        with pytest.raises(ValueError, match="not an SFTP location"):
            SFTPBackend(bad)


async def test_the_stall_watchdog_counts_progress_of_every_call_on_the_connection() -> None:
    """Many calls share one connection; on a slow link a call may wait its turn longer than the
    timeout while the others move data: only a connection on which nothing moves is aborted."""
    from shared.repo.backends.sftp_watchdog import Activity as _Activity
    from shared.repo.backends.sftp_watchdog import Watchdog as _Watchdog

    class Conn:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    conn, activity = Conn(), _Activity()
    waiting = _Watchdog(conn, 0.3, activity)  # type: ignore[arg-type]
    busy = _Watchdog(conn, 0.3, activity)  # type: ignore[arg-type]
    for _ in range(6):
        await asyncio.sleep(0.1)
        busy.progress()
    assert not conn.aborted and not waiting.fired  # 0.6 s without its own progress: the link moved
    busy.cancel()
    await asyncio.sleep(0.5)
    assert conn.aborted and waiting.fired  # nothing moved for 0.3 s: a stalled link
    waiting.cancel()
