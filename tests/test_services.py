"""Every service runs alone (`python -m services.<name>`) and all together (`vbm up`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from shared.contracts import ServiceHeartbeat, heartbeat_subject
from shared.runtime.supervisor import SERVICES
from tests.plugins.nats import NatsServer
from tests.plugins.procs import free_port

ROOT = Path(__file__).resolve().parent.parent


def vbm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update({"VBM_DATA_DIR": str(tmp_path / "data"), "VBM_HEARTBEAT_INTERVAL": "1"})
    env.update(extra)
    return env


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize("service", SERVICES)
async def test_service_runs_alone_and_stops_on_sigterm(
    service: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_server.url)
    sub = await nc.subscribe(heartbeat_subject(service))
    env = vbm_env(tmp_path, VBM_NATS__URL=nats_server.url, VBM_GATEWAY__PORT=str(free_port()))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{service}",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        beat = ServiceHeartbeat.model_validate_json((await sub.next_msg(timeout=30)).data)
        assert beat.service == service and beat.pid == proc.pid and beat.state == "ready"
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode()
        assert f"{service} stopped" in out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nc.close()


def run_service(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_service_without_nats_says_where_and_what_to_do(tmp_path: Path) -> None:
    env = vbm_env(tmp_path, VBM_NATS__URL=f"nats://127.0.0.1:{free_port()}", VBM_NATS__CONNECT_TIMEOUT="1")
    done = run_service("mover", env)
    assert done.returncode == 3
    assert "cannot reach NATS at nats://127.0.0.1:" in done.stderr
    assert "VBM_NATS__URL" in done.stderr


def test_service_with_bad_config_names_the_setting(tmp_path: Path) -> None:
    done = run_service("verifier", vbm_env(tmp_path, VBM_HEARTBEAT_INTERVAL="often"))
    assert done.returncode == 2
    assert "heartbeat_interval" in done.stderr and "VBM_HEARTBEAT_INTERVAL" in done.stderr


@pytest.fixture
def vbm_up(tmp_path: Path, lab_binary: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    port = free_port()
    env = vbm_env(
        tmp_path,
        VBM_GATEWAY__PORT=str(port),
        VBM_NATS__EMBEDDED_PORT=str(free_port()),
        VBM_LAB__PORT="0",
        VBM_LAB__VMS="2",
        VBM_LAB__DISK_SIZE_MIB="4",
        VBM_LAB_BIN_DIR=str(lab_binary.parent),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up"],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("  Ctrl-C stops everything") or time.monotonic() > deadline:
                break
        text = "".join(lines)
        assert f"vbm is up. Gateway (REST API): http://127.0.0.1:{port}/api/v1" in text, text
        yield proc, {"port": port, "output": lines, "data": tmp_path / "data", "env": env}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_all_up(port: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = get_json(f"http://127.0.0.1:{port}/api/v1/services")
        if status == 200 and body["missing"] == []:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"services not all up: {body}")
        time.sleep(0.3)


def vbm_status(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "status", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_vbm_up_runs_everything_and_stops_cleanly(
    vbm_up: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    proc, info = vbm_up
    port = info["port"]
    assert "vCenter: lab http://127.0.0.1:" in "".join(info["output"])
    body = wait_all_up(port)
    pids = {row["pid"] for row in body["services"] if row["up"]}
    assert {row["service"] for row in body["services"] if row["up"]} == set(SERVICES)
    assert get_json(f"http://127.0.0.1:{port}/readyz") == (200, {"status": "ready"})
    status = vbm_status(info["env"])  # `vbm status` hears the same services on the bus
    assert status.returncode == 0, status.stderr
    seen = {(r["service"], r["instance"]) for r in json.loads(status.stdout)["services"] if r["up"]}
    assert seen == {(r["service"], r["instance"]) for r in body["services"] if r["up"]}

    # A service that dies is restarted by the supervisor.
    mover = next(r for r in body["services"] if r["service"] == "mover")
    os.kill(mover["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        rows = get_json(f"http://127.0.0.1:{port}/api/v1/services")[1]["services"]
        movers = [r for r in rows if r["service"] == "mover" and r["up"] and r["pid"] != mover["pid"]]
        if movers:
            pids.add(movers[0]["pid"])
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)

    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.rstrip().endswith("vbm up: stopped")
    for service in SERVICES:
        assert f"{service} stopped" in out
    for pid in pids - {mover["pid"]}:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} outlived vbm up"
    status = vbm_status(info["env"])  # NATS stopped with vbm up
    assert status.returncode == 2 and status.stderr.startswith("vbm status: cannot reach NATS at")


def test_vbm_up_refuses_bad_config(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli", "up"],
        env=vbm_env(tmp_path, VBM_GATEWAY__PORT="x"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "gateway.port" in done.stderr
