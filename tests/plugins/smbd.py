"""A real Samba server for tests: Debian's `smbd` on a free loopback port, in a temp dir with its
own smb.conf, private (passdb), lock, state, cache and pid directories; a share `data` (a temp
directory; `readonly` is the same directory, read only) and one user `backup` (an existing
system account, as smbd requires) with a password in the private passdb (`smbpasswd -c <conf>
-s -a`). Tests never touch the machine's Samba.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.plugins.procs import ManagedProcess, fail_missing, free_port, managed, wait_for_port

__all__ = ["SambaServer"]

HINT = "install Debian's samba (`apt-get install -y samba`; `make test` does)"
USER, PASSWORD, SHARE = "backup", "s3cret-Pass", "data"


@dataclass
class SambaServer:
    host: str
    port: int
    share: str
    path: Path  # the share's directory
    username: str
    password: str
    process: ManagedProcess


def _conf(root: Path, port: int, share: Path) -> str:
    dirs = {d: root / d for d in ("private", "lock", "state", "cache", "pid", "ncalrpc")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    return f"""[global]
  workgroup = WORKGROUP
  server role = standalone server
  smb ports = {port}
  interfaces = 127.0.0.1
  bind interfaces only = yes
  private dir = {dirs["private"]}
  lock directory = {dirs["lock"]}
  state directory = {dirs["state"]}
  cache directory = {dirs["cache"]}
  pid directory = {dirs["pid"]}
  ncalrpc dir = {dirs["ncalrpc"]}
  passdb backend = tdbsam:{dirs["private"]}/passdb.tdb
  log file = {root}/smbd.log
  disable spoolss = yes
  load printers = no
  printcap name = /dev/null
  server min protocol = SMB2_02
  map to guest = never
[{SHARE}]
  path = {share}
  read only = no
  valid users = {USER}
  force user = root
[readonly]
  path = {share}
  read only = yes
  valid users = {USER}
  force user = root
"""


@pytest.fixture
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaServer]:
    smbd = shutil.which("smbd") or ("/usr/sbin/smbd" if Path("/usr/sbin/smbd").exists() else "")
    if not smbd or not shutil.which("smbpasswd"):
        fail_missing(f"smbd/smbpasswd not found: {HINT}")
    root = tmp_path_factory.mktemp("smbd")
    share = root / "share"
    share.mkdir()
    port = free_port()
    conf = root / "smb.conf"
    conf.write_text(_conf(root, port, share))
    subprocess.run(
        ["smbpasswd", "-c", str(conf), "-s", "-a", USER],
        input=f"{PASSWORD}\n{PASSWORD}\n", text=True, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    argv = [smbd, "-s", str(conf), "--foreground", "--no-process-group", "--debug-stdout", "-d", "1"]
    with managed(ManagedProcess(argv, name="smbd", log_path=root / "smbd.out")) as proc:
        wait_for_port("127.0.0.1", port, 20, process=proc)
        yield SambaServer("127.0.0.1", port, SHARE, share, USER, PASSWORD, proc)
