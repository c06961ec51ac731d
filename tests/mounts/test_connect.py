""" "Test connection" without mounting, against real servers on loopback: Samba's smbd through
smbprotocol, NFS-Ganesha through libnfs's nfs-ls/nfs-cp/nfs-cat. Each failure names its step."""

from __future__ import annotations

import os

from shared.mounts.connect import test as connect_test
from shared.mounts.model import validated
from tests.plugins.ganesha import GaneshaServer
from tests.plugins.procs import free_port
from tests.plugins.smbd import SambaServer


def _cifs(samba: SambaServer, **change: str) -> dict[str, str]:
    body = {
        "name": "win", "kind": "cifs", "server": samba.host, "share": samba.share, "username": samba.username,
        "password": samba.password, "options": f"port={samba.port}",
    }  # fmt: skip
    return {**body, **change}


async def test_cifs(samba: SambaServer) -> None:
    ok = await connect_test(validated(_cifs(samba)))
    assert ok.ok and ok.step == "ok", ok.message
    assert os.listdir(samba.path) == []  # the probe was deleted

    bad = await connect_test(validated(_cifs(samba, password="wrong")))
    assert (bad.ok, bad.step) == (False, "auth") and "refused the login of 'backup'" in bad.message
    assert "wrong" not in bad.message and samba.password not in bad.message

    missing = await connect_test(validated(_cifs(samba, share="nope")))
    assert (missing.ok, missing.step) == (False, "share") and "'nope'" in missing.message

    ro = await connect_test(validated(_cifs(samba, share="readonly")))
    assert (
        (ro.ok, ro.step) == (False, "write") and "'readonly'" in ro.message and "not writable" in ro.message
    )

    refused = await connect_test(validated(_cifs(samba, options=f"port={free_port()}")))
    assert (refused.ok, refused.step) == (False, "tcp") and "refused the connection" in refused.message

    dns = await connect_test(validated(_cifs(samba, server="no-such-host.invalid")))
    assert (dns.ok, dns.step) == (False, "dns") and "does not resolve" in dns.message


def _nfs(server: GaneshaServer, **change: str) -> dict[str, str]:
    body = {"name": "nas", "kind": "nfs", "server": server.host, "export": server.export, "version": "4",
            "options": f"port={server.port}"}  # fmt: skip
    return {**body, **change}


async def test_nfs(ganesha: GaneshaServer) -> None:
    ok = await connect_test(validated(_nfs(ganesha)))
    assert ok.ok and ok.step == "ok", ok.message
    assert (ganesha.path / ".vbm-probe").exists()  # libnfs-utils cannot delete it: it stays

    missing = await connect_test(validated(_nfs(ganesha, export="/nope")))
    assert (missing.ok, missing.step) == (False, "share") and "'/nope' not found" in missing.message

    ro = await connect_test(validated(_nfs(ganesha, export="/readonly")))
    assert (ro.ok, ro.step) == (False, "write") and "not writable" in ro.message, ro.message

    refused = await connect_test(validated(_nfs(ganesha, options=f"port={free_port()}")))
    assert (refused.ok, refused.step) == (False, "tcp")
