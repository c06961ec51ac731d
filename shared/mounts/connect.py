""" "Test connection" of a share without mounting it, with user-space clients: the server's name
is resolved, its port must accept a TCP connection, then CIFS logs in with `smbprotocol` and
writes, reads back and deletes a probe file in the share; NFS lists the export with libnfs's
`nfs-ls`, copies a probe file into it with `nfs-cp` and reads it back with `nfs-cat` (libnfs-utils
cannot delete: the probe `.vbm-probe` stays, overwritten by each test).

The answer names the step that failed: dns, tcp, auth, share (not found), write, or the client
itself; never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

from shared.mounts.manager import run_program
from shared.mounts.model import Share

PORTS = {"nfs": 2049, "cifs": 445}
PROBE = ".vbm-probe"


@dataclass(frozen=True)
class Tested:
    ok: bool
    step: str  # ok, dns, tcp, auth, share, write, client
    message: str

    def view(self) -> dict[str, Any]:
        return {"ok": self.ok, "step": self.step, "message": self.message}


def port_of(share: Share) -> int:
    for opt in share.options:
        key, _, value = opt.partition("=")
        if key == "port" and value.isdigit():
            return int(value)
    return PORTS[share.kind]


def _host(share: Share) -> str:
    return share.server.strip("[]")


async def test(share: Share, timeout: float = 10) -> Tested:
    host, port = _host(share), port_of(share)
    try:
        lookup = asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        infos = await asyncio.wait_for(lookup, timeout)
    except socket.gaierror as exc:
        return Tested(False, "dns", f"the server name {host!r} does not resolve: {exc.strerror}")
    except TimeoutError:
        return Tested(False, "dns", f"the server name {host!r}: no answer from DNS within {timeout:g} s")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except TimeoutError:
        return Tested(False, "tcp", f"{host}:{port} does not answer within {timeout:g} s (a firewall?)")
    except OSError as exc:
        addr = infos[0][4][0] if infos else host
        return Tested(False, "tcp", f"{host}:{port} ({addr}) refused the connection: {exc.strerror or exc}")
    if share.kind == "cifs":
        return await asyncio.to_thread(_smb, share, port, timeout)
    return await _nfs(share, port, timeout)


def _smb(share: Share, port: int, timeout: float) -> Tested:
    import smbclient  # smbprotocol: only for this test
    from smbprotocol import exceptions as smb

    host = _host(share)
    user = f"{share.domain}\\{share.username}" if share.domain and share.username else share.username
    unc = f"\\\\{host}\\{share.share}"
    cache: dict[str, Any] = {}  # this test's own connections, closed at its end
    try:
        smbclient.register_session(
            host, username=user or None, password=share.password or None, port=port,
            connection_timeout=int(timeout), auth_protocol="ntlm", connection_cache=cache,
        )  # fmt: skip
    except smb.LogonFailure:
        _close(cache)
        return Tested(
            False,
            "auth",
            f"{host} refused the login of {share.username or 'guest'!r} (user name or password)",
        )
    except (smb.SMBException, ValueError, OSError) as exc:
        _close(cache)
        return Tested(False, "auth", f"{host}: the SMB session could not be set up: {_said(exc)}")
    probe = f"{unc}\\{PROBE}-{uuid.uuid4().hex[:8]}"
    data = uuid.uuid4().bytes
    try:
        try:
            smbclient.listdir(unc, port=port, connection_cache=cache)
        except (smb.SMBOSError, smb.SMBResponseException) as exc:
            return Tested(False, "share", f"share {share.share!r} on {host} cannot be opened: {_said(exc)}")
        try:
            with smbclient.open_file(probe, mode="wb", port=port, connection_cache=cache) as fh:
                fh.write(data)
            with smbclient.open_file(probe, mode="rb", port=port, connection_cache=cache) as fh:
                back = fh.read()
            smbclient.remove(probe, port=port, connection_cache=cache)
        except (smb.SMBOSError, smb.SMBResponseException) as exc:
            return Tested(False, "write", f"share {share.share!r} on {host} is not writable: {_said(exc)}")
        if back != data:
            return Tested(False, "write", f"share {share.share!r}: a probe file read back differs")
    finally:
        _close(cache)
    return Tested(
        True, "ok", f"//{host}/{share.share}: logged in; a probe file was written, read back and deleted"
    )


def _close(cache: dict[str, Any]) -> None:
    """Close this test's SMB connections; a server that refuses the goodbye changes nothing."""
    import smbclient
    from smbprotocol.exceptions import SMBException

    with contextlib.suppress(SMBException, OSError, ValueError):
        smbclient.reset_connection_cache(connection_cache=cache)


def _said(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _url(share: Share, port: int, path: str = "") -> str:
    version = "3" if share.version == "3" else "4"
    return f"nfs://{share.server}{share.export.rstrip('/')}{path}?version={version}&nfsport={port}"


async def _nfs(share: Share, port: int, timeout: float) -> Tested:
    where = f"{share.server}:{share.export}"
    code, said = await run_program(["nfs-ls", _url(share, port)], timeout)
    if code != 0:
        if "NOENT" in said or "No such file" in said:
            return Tested(False, "share", f"export {share.export!r} not found on {share.server}: {said}")
        if "ACCES" in said or "PERM" in said:
            return Tested(
                False, "auth", f"{share.server} refused to mount {share.export!r} for this host: {said}"
            )
        hint = " (install libnfs-utils)" if code == 127 else ""
        return Tested(False, "client", f"nfs-ls {where} failed (exit {code}): {said}{hint}")
    data = uuid.uuid4().hex
    fd, local = tempfile.mkstemp(prefix="vbm-nfs-probe-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
        code, said = await run_program(["nfs-cp", local, _url(share, port, "/" + PROBE)], timeout)
        if code != 0:
            return Tested(False, "write", f"export {where} is not writable: {said}")
        code, said = await run_program(["nfs-cat", _url(share, port, "/" + PROBE)], timeout)
    finally:
        os.unlink(local)
    if code != 0 or data not in said:
        return Tested(False, "write", f"export {where}: the probe file cannot be read back: {said}")
    return Tested(True, "ok", f"{where}: listed; a probe file ({PROBE}) was written and read back")
