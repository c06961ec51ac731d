"""Every repository opened is closed: after a verify, a usage sample and a download of a disk
from a repository on SFTP, the server holds no connection open."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from services.verifier.handlers import Deps, check
from shared.catalog import usage
from shared.db.models import RestorePointRow
from shared.repo import Repository, Writer, restore_point
from shared.repo.backends.sftp import SFTPBackend
from shared.repo.locations import Credentials
from shared.runtime.bus import Permanent
from tests.gateway.conftest import MakeApi
from tests.plugins.sftp import SFTPServer

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


class Image:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


class NoVCenter:
    """No vCenter to compare sizes with (the verify notes it): only the repository is read."""

    def get(self, name: str) -> None:
        raise Permanent(f"vCenter {name!r} is not configured")  # as the real pool says it


async def closed(server: SFTPServer) -> int:
    """The server's open connections once closing ones had a moment to go (0 expected)."""
    for _ in range(50):
        if server.connections() == 0:
            return 0
        await asyncio.sleep(0.1)
    return server.connections()


async def test_no_sftp_connection_stays_open(
    make_api: MakeApi, sftp_server: SFTPServer, tmp_path: Path
) -> None:
    sftp = {"key_file": str(sftp_server.key_file), "known_hosts": str(sftp_server.known_hosts)}
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", sftp=sftp)
    location = sftp_server.location(f"/vbm-{uuid.uuid4().hex[:8]}")
    image = os.urandom(300 * 1024)
    backend = SFTPBackend(location, key_file=sftp["key_file"], known_hosts=sftp["known_hosts"])
    try:
        writer = Writer(await Repository.init(backend, chunk_size=64 * 1024))
        try:
            disk, _ = await writer.write_disk(
                Image(image), key=2000, capacity=len(image), file="vm1/vm1-flat.vmdk"
            )
        finally:
            writer.close()
        rp = restore_point(vm_name="vm1", started=T0, finished=T0, disks=[disk], vm_moref="vm-1")
        await writer.repo.commit(rp)
    finally:
        await backend.close()
    row = RestorePointRow(
        id=rp.id, vcenter="lab", vm_moref="vm-1", vm_name="vm1", repository=location, kind="full",
        disks=[{"key": 2000, "capacity": len(image)}], logical_bytes=len(image), bytes_read=0,
        bytes_stored=0, started_at=T0, finished_at=T0, verify_problems=[],
    )  # fmt: skip
    with api.ctx.sessions.begin() as s:
        s.add(row)
    assert await closed(sftp_server) == 0

    problems, _notes, _sums = await check(Deps(api.ctx, NoVCenter()), row)  # type: ignore[arg-type]  # a verify
    assert problems == []
    measured = await usage.measure(location, Credentials.of(api.ctx.settings))  # a usage sample
    assert measured["stored"]
    url = f"/api/v1/backups/{rp.id}/disks/2000"
    async with api.client.get(url, headers=api.auth) as resp:  # a download
        assert resp.status == 200 and await resp.read() == image
    async with api.client.get(url, headers={**api.auth, "Range": "bytes=0-99"}) as resp:
        assert resp.status == 206 and await resp.read() == image[:100]
    status, detail = await api.call("GET", f"/backups/{rp.id}")
    assert status == 200 and detail["manifest"]["id"] == rp.id
    assert await closed(sftp_server) == 0
