"""Serving metrics: what a scrape of one process, or of a whole `vbm up` tree, shows.

A process alone serves prometheus_client's default registry (its own counters, and its Python
process figures). Processes that share a `PROMETHEUS_MULTIPROC_DIR` (`vbm up` sets a fresh one
for its children) each write their counters to files there, and a scrape of that directory adds
them up (`MultiProcessCollector`): one endpoint for every mover, however many run. Either way the
catalog's gauges (`shared/observe/catalog.py`) can be added, by the one process that serves them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from shared.settings import ConfigError

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class _Registered(Collector):
    """Everything of a registry, as one collector of another (so extra collectors join it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def registry(multiproc_dir: str | Path | None, extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """What a scrape shows: the processes writing to `multiproc_dir` added up (None: this
    process's own metrics), and the `extra` collectors."""
    out = CollectorRegistry(auto_describe=False)
    if multiproc_dir:
        MultiProcessCollector(out, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    else:
        out.register(_Registered(REGISTRY))
    for collector in extra:
        out.register(collector)
    return out


def multiproc_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """The directory this process's metrics go to when it is one of several (`vbm up`)."""
    found = (os.environ if environ is None else environ).get(MULTIPROC_ENV, "")
    return found or None


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)


@dataclass
class Endpoint:
    """A `/metrics` served on a port of its own, in a thread (prometheus_client's server)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve(host: str, port: int, reg: CollectorRegistry) -> Endpoint:
    """Serve `reg` at http://host:port/metrics (port 0: a free one); OSError when it is taken."""
    server, thread = start_http_server(port, addr=host, registry=reg)
    return Endpoint(server, thread)


def serve_port(host: str, port: int, reg: CollectorRegistry) -> Endpoint:
    """`serve`, with a taken port said as a configuration error (exit 2)."""
    try:
        return serve(host, port, reg)
    except OSError as exc:
        raise ConfigError(
            f"metrics.port {port} on {host} cannot be used ({exc}):"
            " set VBM_METRICS__PORT to a free port, or 0"
        ) from None


def serve_process(service: str, host: str, port: int) -> Endpoint | None:
    """A service's own `/metrics` port, when one is set (the gateway's serves the catalog's
    gauges too: services/gateway/__main__.py)."""
    if not port or service == "gateway":
        return None
    endpoint = serve_port(host, port, registry(None))
    log.info("%s serves its metrics at http://%s:%d/metrics", service, host, endpoint.port)
    return endpoint


def fresh_dir(path: Path) -> Path:
    """An empty directory for a process tree's metrics files (the files of an earlier start
    would add old counts to new ones)."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    return path


def process_ended(path: Path, pid: int) -> None:
    """A child of the tree is gone: its live gauges no longer count (its counters still do)."""
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
