"""Several processes of a tree write their metrics to one directory; one scrape adds them up."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from shared.db import make_engine, upgrade
from shared.observe.exposition import fresh_dir, registry, render, serve_port, serve_process
from shared.observe.tree import TreeMetrics
from shared.settings import ConfigError, Settings
from tests.observe.promtool import check_metrics, value
from tests.plugins.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import sys
from shared.observe import metrics
n = int(sys.argv[1])
for _ in range(n):
    metrics.BACKUP_SUCCESS.labels(job="nightly", vm="web", vcenter="lab", repository="/r").inc()
metrics.TRANSFER_BYTES.labels(vcenter="lab", repository="/r", kind="full", stage="stored").inc(1000 * n)
metrics.BACKUP_DURATION.labels(job="nightly", vm="web", vcenter="lab", repository="/r").observe(42.0)
metrics.VCENTER_CALL.labels(vcenter="lab", method="create_snapshot").observe(0.02)
"""


def write_as_a_process(directory: Path, n: int) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", WRITER, str(n)], cwd=ROOT, env=env, check=True, timeout=60)


def test_two_processes_one_scrape(tmp_path: Path) -> None:
    directory = fresh_dir(tmp_path / "metrics")
    write_as_a_process(directory, 2)
    write_as_a_process(directory, 3)  # a second mover, or the first one restarted
    text = render(registry(directory)).decode()
    check_metrics(text)
    labels = {"job": "nightly", "vm": "web", "vcenter": "lab", "repository": "/r"}
    assert value(text, "backup_success_total", **labels) == 5
    assert value(text, "vbm_transfer_bytes_total", stage="stored", kind="full") == 5000
    assert value(text, "backup_duration_seconds_count", **labels) == 2
    assert value(text, "backup_duration_seconds_sum", **labels) == 84.0
    assert value(text, "vbm_vcenter_call_duration_seconds_count", method="create_snapshot") == 2
    # a fresh start of the tree begins at zero again
    fresh_dir(directory)
    assert "backup_success_total{" not in render(registry(directory)).decode()


def test_the_trees_own_port_serves_the_sum_and_the_catalog(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'vbm.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    port = free_port()
    settings = Settings(data_dir=tmp_path, database_url=db_url, metrics={"port": port})  # type: ignore[arg-type]
    tree = TreeMetrics(tmp_path / "metrics")
    tree.start(settings)
    try:
        env: dict[str, str] = {"VBM_METRICS__PORT": "9999"}
        tree.child_env(env)
        assert env == {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}  # one port, not one each
        write_as_a_process(tree.path, 4)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        check_metrics(text)
        assert value(text, "backup_success_total", vm="web") == 4
        assert value(text, "vbm_service_up", service="mover") == 0  # nothing heartbeats here
        assert value(text, "vbm_runs", state="queued") == 0
        assert "/metrics" in tree.banner("http://127.0.0.1:8080")
    finally:
        tree.close()


def test_a_taken_metrics_port_is_a_configuration_error() -> None:
    first = serve_port("127.0.0.1", 0, registry(None))
    try:
        with pytest.raises(ConfigError, match=f"metrics.port {first.port} .*VBM_METRICS__PORT"):
            serve_port("127.0.0.1", first.port, registry(None))
        assert serve_process("gateway", "127.0.0.1", first.port) is None  # the gateway serves its own
        assert serve_process("mover", "127.0.0.1", 0) is None  # off by default
    finally:
        first.close()
