"""The metrics of `vbm up`'s process tree: one endpoint for every service, however many run.

The supervisor gives each child a fresh `PROMETHEUS_MULTIPROC_DIR` (under the data directory,
emptied at every start) and takes `VBM_METRICS__PORT` from them (one port, not six); each child
writes its counters to files there. The gateway's `/metrics` then shows the whole tree; with
`metrics.port` set the supervisor serves the same (and the catalog's gauges) on that port too,
for a Prometheus that should not need an API key of the gateway.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from shared.clock import utcnow
from shared.db import make_engine, make_sessionmaker
from shared.observe.catalog import CatalogCollector
from shared.observe.exposition import MULTIPROC_ENV, Endpoint, fresh_dir, process_ended, registry, serve_port
from shared.settings import Settings


class TreeMetrics:
    """The tree's metrics directory and, with `metrics.port`, its combined endpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.endpoint: Endpoint | None = None
        self.engine: Engine | None = None
        self.public, self.host = False, ""

    def start(self, settings: Settings) -> None:
        fresh_dir(self.path)
        m = settings.metrics
        self.public, self.host = m.public, m.host
        if not m.port:
            return
        self.engine = make_engine(settings.db_url)
        names = [vc.name for vc in settings.vcenters]  # and those in the catalog (the lab's)
        alive = timedelta(seconds=3 * settings.heartbeat_interval)
        catalog = CatalogCollector(make_sessionmaker(self.engine), utcnow, names, alive)
        self.endpoint = serve_port(m.host, m.port, registry(self.path, [catalog]))

    def child_env(self, env: dict[str, str]) -> None:
        env[MULTIPROC_ENV] = str(self.path)
        env.pop("VBM_METRICS__PORT", None)

    def ended(self, pid: int | None) -> None:
        if pid is not None:
            process_ended(self.path, pid)

    def banner(self, gateway_url: str) -> str:
        """The banner's line: where Prometheus scrapes the whole tree."""
        key = "" if self.public else " (an API key with metrics:read)"
        line = f"  Metrics: {gateway_url}/metrics{key}"
        if self.endpoint is not None:
            line += f", or http://{self.host}:{self.endpoint.port}/metrics"
        return line

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self.engine is not None:
            self.engine.dispose()
