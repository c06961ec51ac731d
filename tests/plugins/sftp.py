"""A private SFTP server per test session (and per test, to kill or pause): asyncssh's server in
its own process on a free loopback port, chrooted to a temp dir, with its own host key (written to
a known_hosts file) and one client key pair."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.plugins.procs import ManagedProcess, free_port, port_is_open, wait_until

ROOT = Path(__file__).resolve().parents[2]


class SFTPServer:
    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.root = workdir / "root"
        self.root.mkdir(exist_ok=True)
        self.port = free_port()
        host = asyncssh.generate_private_key("ssh-ed25519")
        client = asyncssh.generate_private_key("ssh-ed25519")
        (workdir / "host_key").write_bytes(host.export_private_key())
        self.key_file = workdir / "client_key"
        self.key_file.write_bytes(client.export_private_key())
        self.key_file.chmod(0o600)
        (workdir / "client_key.pub").write_bytes(client.export_public_key())
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host.export_public_key().decode().strip()}\n")
        self.process = ManagedProcess(
            [
                sys.executable, "-m", "tests.plugins.sftp_server", "--port", str(self.port),
                "--root", str(self.root), "--host-key", str(workdir / "host_key"),
                "--client-key", str(workdir / "client_key.pub"),
            ],
            name="sftp server",
            cwd=ROOT,
            log_path=workdir / "sftp.log",
            stop_timeout=3.0,
        )  # fmt: skip

    def location(self, path: str = "/repo") -> str:
        return f"sftp://vbm@127.0.0.1:{self.port}{path}"

    def start(self) -> SFTPServer:
        self.process.start()
        wait_until(lambda: port_is_open("127.0.0.1", self.port), 30, "the SFTP server", process=self.process)
        return self

    def kill(self) -> None:
        self.process.kill()

    def connections(self) -> int:
        """Connections the server holds open now (its ESTABLISHED sockets, from /proc/net/tcp)."""
        port = f"{self.port:04X}"
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as fh:
                for line in list(fh)[1:]:
                    local, state = line.split()[1], line.split()[3]
                    count += local.rsplit(":", 1)[1] == port and state == "01"
        return count


def _start(workdir: Path) -> SFTPServer:
    server = SFTPServer(workdir)
    try:
        return server.start()
    except BaseException:
        server.kill()
        raise


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPServer]:
    server = _start(tmp_path_factory.mktemp("sftp"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def private_sftp_server(tmp_path: Path) -> Iterator[SFTPServer]:
    server = _start(tmp_path / "sftp")
    try:
        yield server
    finally:
        server.kill()
