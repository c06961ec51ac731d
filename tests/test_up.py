"""`vbm up` as a new user runs it: a vCenter given by configuration, the CLI beside it, Ctrl-C.

Everything here goes through the real `vbm up` process tree (embedded NATS, the six services)
and the real `vbm` command, against a lab started on its own as a user's vCenter would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.launcher import DiskSpec, Lab, LabSpec, VMSpec
from tests.observe.promtool import check_metrics, value
from tests.plugins.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
# A password a lazy serializer would mangle: quotes, a colon, non-ASCII, JSON and URL specials.
PASSWORD = 'Pa:ss "w0rd" ü/%&'
Completed = subprocess.CompletedProcess[str]
ERROR_MARKS = ("Traceback", "unexpected EOF", "Connect call failed", " ERROR ", "[ERR]", "[FTL]")


def clean_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update({"VBM_DATA_DIR": str(data), "VBM_HEARTBEAT_INTERVAL": "1"})
    env.update(extra)
    return env


@dataclass
class Up:
    """A running `vbm up` in its own process group (as a terminal runs it); a thread collects
    its output with the time each line arrived."""

    proc: subprocess.Popen[str]
    env: dict[str, str]
    port: int
    data: Path
    lines: list[tuple[float, str]] = field(default_factory=list)
    key: str = ""

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def output(self, since: float = 0.0) -> str:
        return "".join(line for at, line in list(self.lines) if at >= since)

    def read_until(self, marker: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output():
            assert time.monotonic() < deadline, f"{marker!r} not seen; output:\n{self.output()}"
            assert self.reader.is_alive() or marker in self.output(), self.output()
            time.sleep(0.1)

    def cli(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *args],
            env=self.env,
            cwd=cwd or ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def get(self, path: str) -> tuple[int, Any]:
        headers = {"X-API-Key": self.key} if self.key else {}
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.get("/readyz")
            services = self.get("/api/v1/services")[1] if status == 200 else {}
            if status == 200 and services.get("missing") == []:
                return
            assert time.monotonic() < deadline, f"not ready: {body} {services}"
            time.sleep(0.3)

    def children(self) -> dict[int, str]:
        """pid -> command line of every direct child of vbm up."""
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid:
                    out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, IndexError, ValueError):
                continue
        return out

    def interrupt(self) -> str:
        """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group; returns
        what was printed from then on."""
        sent = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=90)
        self.reader.join(timeout=10)
        return self.output(since=sent)


@pytest.fixture
def start_up(tmp_path: Path, lab_binary: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []

    def start(LAB_SPEC: str | None = None, **extra: str) -> Up:
        port = free_port()
        env = clean_env(
            tmp_path / "data",
            VBM_GATEWAY__PORT=str(port),
            VBM_NATS__EMBEDDED_PORT=str(free_port()),
            VBM_LAB_BIN_DIR=str(lab_binary.parent),
            VBM_PIPELINE__WATCHDOG_INTERVAL="1",
            **extra,
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "up", *(["--lab-spec", LAB_SPEC] if LAB_SPEC else [])],
            env=env,
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as in a terminal
        )
        up = Up(proc, env, port, tmp_path / "data")
        started.append(up)
        up.read_until("Ctrl-C stops everything")
        return up

    yield start
    for up in started:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)
            up.proc.wait()
        up.reader.join(timeout=10)
        if up.proc.stdout is not None:
            up.proc.stdout.close()


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_up_backs_up_a_configured_vcenter_survives_nats_dying_and_stops_on_ctrl_c(
    start_up: Callable[..., Up], lab_factory: Callable[[LabSpec], Lab], tmp_path: Path
) -> None:
    lab = lab_factory(
        LabSpec(
            vms=(VMSpec("app-01", (DiskSpec(4 * MiB, seed=5),), cbt=True),),
            username="backup@vsphere.local",
            password=PASSWORD,
        )
    )
    vcenters = [
        {
            "name": "prod",
            "url": lab.sdk_url,
            "username": lab.username,
            "password": PASSWORD,
            "verify_tls": False,
        }
    ]
    metrics_port = free_port()
    up = start_up(VBM_VCENTERS=json.dumps(vcenters), VBM_METRICS__PORT=str(metrics_port))
    banner = up.output()
    assert f"vCenter: prod {lab.sdk_url}" in banner and PASSWORD not in banner
    assert f"/metrics (an API key with metrics:read), or http://127.0.0.1:{metrics_port}/metrics" in banner
    assert "starting the lab" not in banner
    up.wait_ready()

    # No user yet: vbm up printed a one-time token that makes the first admin, once.
    up.read_until("or: vbm user add NAME --role admin")
    token = re.search(r'"token": "([^"]+)"', up.output())
    assert token, up.output()
    body = {"token": token.group(1), "name": "ana", "password": "a long passphrase"}
    assert post_json(f"http://127.0.0.1:{up.port}/api/v1/setup", body)[0] == 201
    assert post_json(f"http://127.0.0.1:{up.port}/api/v1/setup", body)[0] == 409
    assert "ana" in up.cli("user", "list").stdout

    # The CLI beside it, on the same data directory: a key the gateway accepts, a job, a run.
    made = up.cli("apikey", "create", "ops")
    assert made.returncode == 0, made.stderr
    up.key = made.stdout.strip()
    status, vms = up.get("/api/v1/vms")
    assert status == 200, vms
    assert [v["name"] for v in vms["vms"]] == ["app-01"] and vms["unreachable"] == []
    assert up.cli("job", "create", "--name", "nightly", "--vm", "app-01").returncode == 0
    run_id = up.cli("job", "run", "nightly").stdout.strip()
    watched = up.cli("run", "watch", run_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    # Their logs: JSON lines filed by vbm up, read back by run; readable lines on its terminal.
    logged = up.cli("logs", "--run", run_id, "--json")
    assert logged.returncode == 0, logged.stderr
    lines = [json.loads(line) for line in logged.stdout.splitlines()]
    assert "mover" in {line["service"] for line in lines} and {line["run_id"] for line in lines} == {run_id}
    assert (up.data / "logs" / "gateway.jsonl").is_file() and '{"ts"' not in up.output()

    # Children are told only what they need.
    kids = up.children()
    nats_pid = next(pid for pid, cmd in kids.items() if "nats-server" in cmd)
    assert not [k for k in environ_of(nats_pid) if k.startswith("VBM_")]
    services = {r["service"]: r["pid"] for r in up.get("/api/v1/services")[1]["services"] if r["up"]}
    assert "VBM_VCENTERS" not in environ_of(services["scheduler"])
    assert json.loads(environ_of(services["mover"])["VBM_VCENTERS"])[0]["password"] == PASSWORD
    # What vbm creates is private.
    assert stat.S_IMODE(up.data.stat().st_mode) == 0o700
    assert stat.S_IMODE((up.data / "vbm.db").stat().st_mode) == 0o600
    chunks = [p for p in (up.data / "repo" / "chunks").rglob("*") if p.is_file()]
    assert chunks and {stat.S_IMODE(p.stat().st_mode) for p in chunks} == {0o600}

    # NATS killed: vbm up says so, starts it again on the same store; the system recovers.
    os.kill(nats_pid, signal.SIGKILL)
    up.read_until("restarting it in")
    up.read_until("NATS is back", timeout=60)
    up.wait_ready()
    second = up.cli("job", "run", "nightly").stdout.strip()
    watched = up.cli("run", "watch", second)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "succeeded" in watched.stdout

    # One metrics endpoint for the whole tree (every service's files added up, and the catalog),
    # the same on the gateway's /metrics; no child opens a port of its own.
    assert not [k for k in environ_of(services["mover"]) if k == "VBM_METRICS__PORT"]
    assert environ_of(services["mover"])["PROMETHEUS_MULTIPROC_DIR"] == str(up.data / "metrics")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        tree = resp.read().decode()
    bearer = {"Authorization": f"Bearer {up.key}"}
    req = urllib.request.Request(f"http://127.0.0.1:{up.port}/metrics", headers=bearer)
    with urllib.request.urlopen(req, timeout=10) as resp:
        gateway = resp.read().decode()
    for page in (tree, gateway):
        check_metrics(page)
        assert value(page, "backup_success_total", job="nightly", vm="app-01", vcenter="prod") == 2
        assert value(page, "vbm_open_snapshots", vcenter="prod") == 0
        assert value(page, "vbm_service_up", service="mover") == 1

    # Ctrl-C: the services drain while NATS is still there; no error anywhere.
    out = up.interrupt()
    assert up.proc.returncode == 0, out
    assert out.rstrip().endswith("vbm up: stopped")
    assert not [m for m in ERROR_MARKS if m in out], out
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists() or pid == nats_pid, f"pid {pid} outlived vbm up"


def test_cli_never_creates_a_database_of_its_own(tmp_path: Path) -> None:
    """Run where `vbm up` does not run (no data directory here): it says where it looked."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    for args in (["apikey", "create", "ops"], ["job", "list"], ["db", "status"], ["alerts"]):
        done = subprocess.run(
            [sys.executable, "-m", "shared.cli", *args],
            env=env,
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"no vbm database at {elsewhere / 'var' / 'vbm.db'}" in done.stderr
        assert "VBM_DATA_DIR" in done.stderr
        assert not done.stdout
    assert list(elsewhere.iterdir()) == []


def test_up_runs_a_lab_spec_file_and_serves_non_ascii_vms(
    start_up: Callable[..., Up], tmp_path: Path
) -> None:
    """`vbm up --lab-spec`: the lab it starts is the file's; a VM named with blanks and
    non-ASCII backs up, downloads under its name (RFC 6266) and matches `vbm lab disk-sha256`."""
    name = "Prüf VM 東京"
    spec = tmp_path / "lab.json"
    spec.write_text(
        json.dumps(
            {"vms": [{"name": name, "cbt": True, "disks": [{"size": "4M", "seed": 9, "layout": "random"}]}]}
        )
    )
    up = start_up(VBM_LAB__PORT="0", LAB_SPEC=str(spec))
    assert f"starting the lab simulator: from {spec}" in up.output()
    up.wait_ready()
    up.key = up.cli("apikey", "create", "ops").stdout.strip()
    assert up.cli("job", "create", "--name", "tokyo", "--vm", name).returncode == 0
    run_id = up.cli("job", "run", "tokyo").stdout.strip()
    watched = up.cli("run", "watch", run_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    (point,) = up.get("/api/v1/backups?job=tokyo")[1]["backups"]
    req = urllib.request.Request(
        f"http://127.0.0.1:{up.port}/api/v1/backups/{point['id']}/disks/2000", headers={"X-API-Key": up.key}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        disposition = resp.headers["Content-Disposition"]
        digest = hashlib.sha256(resp.read()).hexdigest()
    assert disposition.isascii() and urllib.parse.quote(name) in disposition
    source = up.cli("lab", "disk-sha256", name, "2000")
    assert source.returncode == 0 and source.stdout.strip() == digest, source.stderr
    # a restore may not be named to escape its folder, from the CLI as from the API
    dots = up.cli("restore", "start", point["id"], "--instant", "--name", "..")
    assert dots.returncode == 1 and "name: " in dots.stderr and "cannot be a VM name" in dots.stderr
    assert up.interrupt().rstrip().endswith("vbm up: stopped")
    # a second `vbm up` on the same data directory: the lab starts afresh, the catalog stays
    again = start_up(VBM_LAB__PORT="0", LAB_SPEC=str(spec))
    assert "the lab starts afresh" in again.output()
    again.key = up.key
    again.wait_ready()
    assert [p["id"] for p in again.get("/api/v1/backups?job=tokyo")[1]["backups"]] == [point["id"]]
    assert again.interrupt().rstrip().endswith("vbm up: stopped")


def post_json(url: str, body: object) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
