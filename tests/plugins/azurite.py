"""A private Azure Blob server for tests: Azurite (`npm ci` of node/package-lock.json, in var/node).

It listens on a free loopback port, keeps its data in a temp dir and knows one account with a
random key (AZURITE_ACCOUNTS), so wrong keys are refused for real. ``azurite_server`` is
session-scoped and shared: tests isolate themselves with ``azure_container`` (a fresh container
each) and must not stop it; ``private_azurite_server`` is a test's own, free to kill or pause.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from tests.plugins.procs import ManagedProcess, fail_missing, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "var" / "node" / "node_modules" / ".bin" / "azurite-blob"
INSTALL_HINT = (
    "run `make test`, which installs Azurite with npm into var/node"
    " (`npm ci` of node/package-lock.json into var/node; Node.js from Debian's nodejs and npm packages)"
)


class AzuriteServer:
    def __init__(self, workdir: Path) -> None:
        if not BINARY.exists():
            fail_missing(f"Azurite is not installed at {BINARY}: {INSTALL_HINT}")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.account = "vbmtest" + secrets.token_hex(3)
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.process = ManagedProcess(
            [
                str(BINARY), "--blobHost", self.host, "--blobPort", str(self.port),
                "--location", str(workdir / "data"), "--silent", "--skipApiVersionCheck", "--loose",
                "--disableProductStyleUrl", "--disableTelemetry",
            ],
            name="azurite",
            cwd=workdir,
            env={"AZURITE_ACCOUNTS": f"{self.account}:{self.key}"},
            log_path=workdir / "azurite.log",
            stop_timeout=3.0,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<AzuriteServer {self.endpoint} pid={self.process.pid_or_none}>"

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint (path-style, as Azurite serves it)."""
        return f"http://{self.host}:{self.port}/{self.account}"

    def client(self, key: str | None = None) -> BlobServiceClient:
        return BlobServiceClient(
            self.endpoint, credential={"account_name": self.account, "account_key": key or self.key}
        )

    def start(self) -> AzuriteServer:
        self.process.start()
        client = self.client()

        def ready() -> bool:
            try:
                list(client.list_containers(results_per_page=1))
            except Exception:
                return False
            return True

        wait_until(ready, 60, f"Azurite at {self.endpoint}", interval=0.1, process=self.process)
        return self

    def kill(self) -> None:
        self.process.kill()

    def pause(self) -> None:
        self.process.pause()

    def resume(self) -> None:
        self.process.resume()


def _start(workdir: Path) -> AzuriteServer:
    server = AzuriteServer(workdir)
    try:
        return server.start()
    except BaseException:
        server.kill()
        raise


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    server = _start(tmp_path_factory.mktemp("azurite"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def private_azurite_server(tmp_path: Path) -> Iterator[AzuriteServer]:
    server = _start(tmp_path / "azurite")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def azure_container(azurite_server: AzuriteServer) -> Iterator[str]:
    """A fresh, empty container on ``azurite_server``; removed afterwards."""
    name = f"vbm-{uuid.uuid4().hex[:16]}"
    client = azurite_server.client()
    client.create_container(name)
    try:
        yield name
    finally:
        client.delete_container(name)
