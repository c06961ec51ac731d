"""The log format (JSON lines, readable text), its run fields, the supervisor's log files and
`vbm logs` reading them back (a real `vbm` process; --follow while lines are written)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.cli.app import main as cli_main
from shared.observe import logfiles, logs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def emit(fmt: str, **fields: str) -> str:
    out = io.StringIO()
    logs.configure("INFO", "mover", fmt, stream=out)
    with logs.bound(**fields):
        logging.getLogger("services.mover.backup").info("web: %d bytes", 42)
    try:
        raise ValueError("disk gone")
    except ValueError:
        logging.getLogger("services.mover.backup").exception("failed")
    return out.getvalue()


def test_json_lines_carry_the_run_fields_only_while_bound(restore_root_logging: None) -> None:
    first, second = emit("json", run_id="run-1", job="job-a", vm="web").splitlines()[:2]
    line = json.loads(first)
    assert line["msg"] == "web: 42 bytes" and line["level"] == "INFO" and line["service"] == "mover"
    assert line["logger"] == "services.mover.backup" and line["ts"].endswith("+00:00")
    assert (line["run_id"], line["job"], line["vm"]) == ("run-1", "job-a", "web")
    after = json.loads(second)
    assert "run_id" not in after and "ValueError: disk gone" in after["exc"]


def test_text_is_readable(restore_root_logging: None) -> None:
    text = emit("text", run_id="run-1", vm="web")
    first = text.splitlines()[0]
    assert " mover INFO services.mover.backup: web: 42 bytes  [run=run-1 vm=web]" in first
    assert "Traceback" in text and "ValueError: disk gone" in text


def test_the_default_is_json_outside_a_terminal(
    restore_root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VBM_LOG_FORMAT", raising=False)
    assert logs.configure("INFO", "x", stream=io.StringIO()) == "json"
    monkeypatch.setenv("VBM_LOG_FORMAT", "text")
    assert logs.configure("INFO", "x", stream=io.StringIO()) == "text"


def test_files_rotate_by_size(tmp_path: Path) -> None:
    f = logfiles.LogFile(tmp_path / "mover.jsonl", max_bytes=300, keep=2)
    for n in range(21):
        f.write(logfiles.as_record("mover", json.dumps({"ts": f"2026-12-06T10:00:{n:02d}", "msg": f"m{n}"})))
    f.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["mover.jsonl", "mover.jsonl.1", "mover.jsonl.2"]
    kept = [r["msg"] for r in logfiles.read(tmp_path)]
    assert kept == sorted(kept) and kept[-1] == "m20" and len(kept) < 21  # the oldest went
    plain = logfiles.as_record("gateway", "vbm gateway listening on http://127.0.0.1:1")
    assert plain["service"] == "gateway" and plain["msg"].startswith("vbm gateway listening")


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def vbm(data: Path, *args: str) -> Ran:
    """`vbm logs ...` in this process (the CLI's startup is what the --follow case pays)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        for key in [k for k in os.environ if k.startswith("VBM_")]:
            mp.delenv(key)
        mp.setenv("VBM_DATA_DIR", str(data))
        code = cli_main(["logs", *args])
    return Ran(code, out.getvalue(), err.getvalue())


def test_vbm_logs_filters_by_run_and_service_and_follows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert "no logs in" in vbm(data).stderr
    files = logfiles.LogFiles(logfiles.logs_dir(data))
    line = {"ts": "2026-12-06T10:00:01.000+00:00", "level": "INFO", "logger": "x"}
    files.write("mover", json.dumps(line | {"msg": "read web", "run_id": "run-1", "vm": "web"}))
    files.write(
        "snapshotter",
        json.dumps(line | {"ts": "2026-12-06T10:00:00.000+00:00", "msg": "snap", "run_id": "run-1"}),
    )
    files.write("mover", json.dumps(line | {"msg": "other run", "run_id": "run-2"}))
    files.write("gateway", "not JSON: a print")

    out = vbm(data, "--run", "run-1")
    assert out.returncode == 0, out.stderr
    assert [ln.split(" INFO ")[0].split()[-1] for ln in out.stdout.splitlines()] == ["snapshotter", "mover"]
    assert "[run=run-1 vm=web]" in out.stdout
    as_json = [json.loads(ln) for ln in vbm(data, "--service", "mover", "--json").stdout.splitlines()]
    assert [r["msg"] for r in as_json] == ["read web", "other run"]
    wrong = vbm(data, "--service", "nope")
    assert wrong.returncode == 2 and "there are: gateway, mover, snapshotter" in wrong.stderr
    assert vbm(data, "--run", "run-9").returncode == 1

    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")} | {"VBM_DATA_DIR": str(data)}
    follower = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "logs", "--run", "run-3", "--follow", "--json"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # it has read what is there and waits for more
        files.write("verifier", json.dumps(line | {"msg": "verified", "run_id": "run-3"}))
        files.write("verifier", json.dumps(line | {"msg": "not this run", "run_id": "run-4"}))
        assert follower.stdout is not None
        got = json.loads(follower.stdout.readline())
        assert got["msg"] == "verified" and got["service"] == "verifier"
    finally:
        follower.terminate()
        follower.wait(10)
        if follower.stdout is not None:
            follower.stdout.close()
        files.close()


def test_traces_are_off_without_an_endpoint() -> None:
    """No endpoint: no SDK provider, spans record nothing, nothing to store or send (a fresh
    process: OpenTelemetry's provider is process-wide)."""
    code = (
        "from opentelemetry import trace\n"
        "from shared.observe import tracing\n"
        "assert tracing.setup('mover', None) is None\n"
        "with tracing.span('x', vm='web') as s:\n"
        "    assert not s.is_recording() and tracing.carrier() == {} and tracing.ids() is None\n"
        "assert type(trace.get_tracer_provider()).__name__ == 'ProxyTracerProvider'\n"
        "print('off')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "off", done.stderr
