"""A WebDAV server for the rclone backend's tests: `rclone serve webdav` on a free loopback port
over a temp dir (with a user and password), and the rclone remote that reaches it, configured
through RCLONE_CONFIG_* variables (no config file)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.procs import ManagedProcess, find_binary, free_port, port_is_open, wait_until

HINT = "run `make test`, which installs Debian's rclone package"


class WebDAVServer:
    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.root = workdir / "root"
        self.root.mkdir(exist_ok=True)
        self.port = free_port()
        self.user, self.password = "vbm", secrets.token_hex(8)
        self.process = ManagedProcess(
            [
                find_binary("rclone", HINT), "serve", "webdav", str(self.root),
                "--addr", f"127.0.0.1:{self.port}", "--user", self.user, "--pass", self.password,
                "--config", "/dev/null",
            ],
            name="rclone serve webdav",
            log_path=workdir / "webdav.log",
            stop_timeout=3.0,
        )  # fmt: skip

    def remote_env(
        self, name: str = "vbmdav", password: str | None = None, address: str | None = None
    ) -> dict[str, str]:
        """The variables that define rclone remote `name` for this server (rclone obscures the
        password itself: `rclone obscure`); `address` (host:port) reaches it another way (a
        fault proxy)."""
        import subprocess

        obscured = subprocess.run(
            ["rclone", "obscure", password or self.password], capture_output=True, check=True, text=True
        ).stdout.strip()
        up = name.upper()
        return {
            f"RCLONE_CONFIG_{up}_TYPE": "webdav",
            f"RCLONE_CONFIG_{up}_URL": f"http://{address or f'127.0.0.1:{self.port}'}",
            f"RCLONE_CONFIG_{up}_VENDOR": "other",
            f"RCLONE_CONFIG_{up}_USER": self.user,
            f"RCLONE_CONFIG_{up}_PASS": obscured,
        }

    def start(self) -> WebDAVServer:
        self.process.start()
        wait_until(
            lambda: port_is_open("127.0.0.1", self.port), 30, "rclone serve webdav", process=self.process
        )
        return self

    def kill(self) -> None:
        self.process.kill()


@pytest.fixture(scope="session")
def webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDAVServer]:
    server = WebDAVServer(tmp_path_factory.mktemp("webdav")).start()
    try:
        yield server
    finally:
        server.kill()
