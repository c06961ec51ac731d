"""Metrics of a real backup: the services as processes writing to one metrics directory (as under
`vbm up`), two movers each also on a port of its own, the gateway's /metrics adding them up with the
catalog's gauges; every page passes `promtool check metrics`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.catalog import apikeys
from shared.model.access import Role
from shared.observe.exposition import fresh_dir
from tests.observe.promtool import check_metrics, exported, names, value
from tests.pipeline.conftest import Pipeline, now
from tests.pipeline.test_replication import wait_replications
from tests.pipeline.test_restore import restore, wait_restore
from tests.plugins.procs import free_port
from tests.plugins.webhook import WebhookReceiver


def scrape_port(port: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def post(url: str, headers: dict[str, str]) -> tuple[int, str, str]:
    return get(url, headers, method="POST")


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, body) of a request."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def test_a_backup_in_the_metrics(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    directory = fresh_dir(tmp_path / "metrics")
    hook = {"name": "hook", "type": "webhook", "url": webhook_receiver.url(), "on": ["success", "failure"]}
    webhook_receiver.answers = [500]  # the first delivery fails (and is tried again later)
    p = pipeline_factory(
        PROMETHEUS_MULTIPROC_DIR=str(directory), VBM_NOTIFICATIONS=json.dumps({"channels": [hook]})
    )
    p.start("snapshotter", "verifier", "notifier")
    shared_env = p.env
    mover_ports = {"mover": free_port(), "mover-2": free_port()}  # two movers, each with its port
    for name, port in mover_ports.items():
        p.env = {**shared_env, "VBM_METRICS__PORT": str(port)}
        p.start_as(name, "mover")
    p.env = shared_env
    copies, blocked = tmp_path / "copies", tmp_path / "a-file"
    blocked.write_text("not a directory")  # a target that cannot be made: its copies fail
    job = p.create_job("nightly", ["web", "db"], options={"replicate_to": [str(copies), str(blocked / "r")]})
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    _, err, code = await p.cli("repo", "measure", "--json")
    assert code == 0, err

    # each mover's own port: its process's counters (and Python's process figures)
    repo = str(p.repo_dir)
    web = {"job": "nightly", "vm": "web", "vcenter": "lab", "repository": repo}
    durations = moved = 0.0
    for port in mover_ports.values():
        own = scrape_port(port)
        check_metrics(own)
        assert value(own, "process_resident_memory_bytes") > 0
        with pytest.raises(KeyError):  # a task ends in the verifier, which a mover's page does not show
            value(own, "backup_success_total")
        with contextlib.suppress(KeyError):  # a mover the dispatcher gave nothing has counted nothing
            durations += value(own, "backup_duration_seconds_count", job="nightly")
            moved += value(own, "vbm_transfer_bytes_total", stage="transferred", kind="full")
    assert durations == 2 and moved > 26 * 1024 * 1024  # web's 17 MiB and db's 9 MiB, read once

    # the gateway (a process too): its /metrics adds up every process of the tree, with the
    # catalog's gauges; an API key for it, and its metrics port without one
    with p.sessions.begin() as s:
        key = apikeys.create(s, "prometheus", now(), role=Role.VIEWER)[1]
    api_port, gateway_port = free_port(), free_port()
    p.env = {**shared_env, "VBM_GATEWAY__PORT": str(api_port), "VBM_METRICS__PORT": str(gateway_port)}
    p.start("gateway")
    p.env = shared_env
    page = scrape_port(gateway_port)
    url = f"http://127.0.0.1:{api_port}/metrics"
    status, _, body = get(url)
    assert status == 401 and "API key" in json.loads(body)["detail"]
    status, content_type, text = get(url, {"Authorization": f"Bearer {key}"})
    assert status == 200 and content_type.startswith("text/plain")
    for scraped in (page, text):
        check_metrics(scraped)
    assert value(page, "backup_success_total", **web) == value(text, "backup_success_total", **web) == 1
    # the two movers' files added up: each VM's backup once, the bytes of both
    assert value(text, "vbm_transfer_bytes_total", stage="transferred", kind="full") == moved
    ours = {n for n in names(text) if n.startswith(("vbm_", "backup_"))}
    assert ours <= exported(), ours - exported()  # the names the dashboard and rules are checked against
    # the bus runner's, from every service's files too (its gauges' multiprocess mode: mostrecent)
    assert value(text, "vbm_event_handler_duration_seconds_count", subject="vbm.snapshot.ready") == 2
    assert {"vbm_jetstream_consumer_pending", "vbm_jetstream_consumer_ack_pending"} <= names(text)
    for vm in ("web", "db"):
        labels = {**web, "vm": vm}
        assert value(text, "backup_success_total", **labels) == 1
        assert value(text, "backup_duration_seconds_count", **labels) == 1
        assert abs(value(text, "vbm_last_success_timestamp_seconds", **labels) - time.time()) < 120
        assert value(text, "backup_size_bytes", **labels, kind="full", stage="stored") > 0
    with pytest.raises(KeyError):  # a counter shows once it counted
        value(text, "backup_failure_total")
    assert value(text, "vbm_catalog_up") == 1
    assert value(text, "vbm_open_snapshots", vcenter="lab") == 0  # idle: the no-leak promise
    assert value(text, "vbm_runs", state="running") == value(text, "vbm_runs", state="queued") == 0
    assert value(text, "vbm_tasks", state="queued") == 0
    assert value(text, "vbm_verify_results_total", result="ok", how="after backup") == 2
    # one each, and one more for db: turning CBT on takes a snapshot cycle
    calls = value(text, "vbm_vcenter_call_duration_seconds_count", vcenter="lab", method="create_snapshot")
    assert calls == value(text, "vbm_vcenter_call_duration_seconds_count", method="remove_snapshot") == 3
    assert value(text, "vbm_repository_stored_bytes", repository=repo) > 0
    assert value(text, "vbm_repository_free_bytes", repository=repo) > 0
    for service in ("snapshotter", "verifier", "notifier", "gateway"):
        assert value(text, "vbm_service_up", service=service) == 1, service
    assert value(text, "vbm_service_up", service="mover") == 2
    assert value(text, "vbm_service_up", service="scheduler") == 0  # not started here

    # a backup that fails (vCenter refuses the snapshot): counted; its snapshot counts as open
    # until the clean-up has made sure it does not exist
    p.lab.fault("CreateSnapshot_Task", "task-error", fault="InvalidState")
    broken = await p.run_job(p.create_job("broken", ["db"]))
    assert (await p.wait_run(broken)).state == "failed", p.dump(broken)
    p.lab.clear_faults()
    text = get(url, {"Authorization": f"Bearer {key}"})[2]
    check_metrics(text)
    assert value(text, "backup_failure_total", job="broken", vm="db", vcenter="lab", repository=repo) == 1
    with pytest.raises(KeyError):
        value(text, "backup_success_total", job="broken")
    assert value(text, "vbm_vcenter_call_errors_total", method="create_snapshot", fault="InvalidState") == 1
    assert value(text, "vbm_open_snapshots", vcenter="lab") == len(p.open_ledger()) == 1

    # the rest of the work: copies (one target fine, one failing), a restore, deliveries, a GC
    for rp in p.restore_points(run):
        await wait_replications(p, rp.id, 2)
    db_point = next(rp for rp in p.restore_points(run) if rp.vm_name == "db")
    restore_id = await restore(p, restore_point_id=db_point.id, name="db-restored", datastore="LocalDS_0")
    assert (await wait_restore(p, restore_id)).state == "succeeded", p.logs()
    with p.sessions.begin() as s:
        admin = apikeys.create(s, "ops", now())[1]
    status, _, body = post(
        f"http://127.0.0.1:{api_port}/api/v1/gc?repository={repo}", {apikeys.HEADER: admin}
    )
    assert status == 200, body
    deadline = time.monotonic() + 30
    while True:  # the failed delivery and the failure's are counted once the notifier recorded them
        text = get(url, {"Authorization": f"Bearer {key}"})[2]
        with contextlib.suppress(KeyError):
            if value(text, "vbm_notification_deliveries_total", channel="hook", outcome="sent") >= 1:
                break
        assert time.monotonic() < deadline, (webhook_receiver.received, p.logs())
        await asyncio.sleep(0.3)
    check_metrics(text)
    assert value(text, "vbm_notification_deliveries_total", channel="hook", outcome="failed") == 1
    assert value(text, "vbm_replication_bytes_total", repository=repo, target=str(copies)) > 0
    assert value(text, "vbm_replication_failures_total", repository=repo, target=str(blocked / "r")) == 2
    assert value(text, "vbm_replication_lag_seconds", target=str(copies)) == 0
    assert 0 < value(text, "vbm_replication_lag_seconds", target=str(blocked / "r")) < 120
    assert (
        value(text, "vbm_restore_duration_seconds_count", vcenter="lab", mode="new_vm", outcome="succeeded")
        == 1
    )
    assert value(text, "vbm_gc_freed_bytes_total", repository=repo) == 0  # nothing unreferenced yet
