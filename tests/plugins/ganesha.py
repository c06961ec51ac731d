"""A real NFS server for tests: NFS-Ganesha (`ganesha.nfsd`, FSAL VFS) on a free loopback port,
NFSv4 over TCP only (no rpcbind here: NFSv3 and UDP would need to register with a portmapper),
exporting a temp directory as `/export` (pseudo path; `/readonly`: the same, read only), with
its own config, log, pid and recovery directories. Started as root (the VFS FSAL needs
CAP_DAC_READ_SEARCH for its file handles).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugins.procs import ManagedProcess, fail_missing, free_port, managed, wait_for_port

__all__ = ["GaneshaServer"]

HINT = "install Debian's nfs-ganesha and nfs-ganesha-vfs (`make test` does)"
EXPORT = "/export"


@dataclass
class GaneshaServer:
    host: str
    port: int
    export: str  # the pseudo path clients name
    path: Path  # the exported directory
    process: ManagedProcess


def _export(export_id: int, path: Path, pseudo: str, access: str) -> str:
    return f"""EXPORT {{
  Export_Id = {export_id};
  Path = {path};
  Pseudo = {pseudo};
  Access_Type = {access};
  Squash = No_Root_Squash;
  SecType = sys;
  Protocols = 4;
  Transports = TCP;
  FSAL {{ Name = VFS; }}
}}
"""


def _conf(root: Path, port: int, path: Path) -> str:
    return f"""NFS_CORE_PARAM {{
  NFS_Port = {port};
  Bind_addr = 127.0.0.1;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
  Protocols = 4;
}}
NFSV4 {{ RecoveryRoot = {root}/recovery; Graceless = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
{_export(1, path, EXPORT, "RW")}{_export(2, path, "/readonly", "RO")}LOG {{ Default_Log_Level = EVENT; }}
"""


@pytest.fixture
def ganesha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GaneshaServer]:
    binary = shutil.which("ganesha.nfsd")
    if not binary:
        fail_missing(f"ganesha.nfsd not found: {HINT}")
    root = tmp_path_factory.mktemp("ganesha")
    path = root / "export"
    path.mkdir()
    (root / "recovery").mkdir()
    port = free_port()
    conf = root / "ganesha.conf"
    conf.write_text(_conf(root, port, path))
    argv = [
        binary,
        "-F",
        "-f",
        conf,
        "-L",
        root / "ganesha.log",
        "-p",
        root / "ganesha.pid",
        "-N",
        "NIV_EVENT",
    ]
    with managed(ManagedProcess(argv, name="ganesha", log_path=root / "ganesha.out")) as proc:
        wait_for_port("127.0.0.1", port, 30, process=proc)
        yield GaneshaServer("127.0.0.1", port, EXPORT, path, proc)
