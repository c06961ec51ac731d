"""The launcher: build cache, clear errors, process lifetime (parent death, stdin EOF), CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import lab.build as launcher
from lab.launcher import DiskSpec, Lab, LabError, LabSpec, VMSpec, build_lab

REPO = Path(__file__).resolve().parents[2]
TINY = LabSpec(vms=(VMSpec(name="t", disks=(DiskSpec(size=64 * 1024),)),))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_dead(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_build_is_cached(lab_binary: Path) -> None:
    t0 = time.monotonic()
    assert build_lab() == lab_binary
    assert time.monotonic() - t0 < 2
    assert lab_binary.name.startswith("vcsim-") and os.access(lab_binary, os.X_OK)


def test_missing_toolchain_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VBM_LAB_BIN_DIR", str(tmp_path / "bin"))
    monkeypatch.setattr(launcher, "GOVMOMI_SRC", tmp_path / "nowhere")
    with pytest.raises(LabError, match="golang-github-vmware-govmomi-dev"):
        build_lab()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(launcher, "GO_FALLBACK", tmp_path / "no-go")
    with pytest.raises(LabError, match="golang-go"):
        build_lab()


def test_stop_is_idempotent(lab_factory: Callable[[LabSpec], Lab]) -> None:
    lab = lab_factory(TINY)
    assert lab.alive and lab.state()["vms"][0]["name"] == "t"
    lab.stop()
    lab.stop()
    assert not lab.alive and wait_dead(lab.pid)


def test_exits_when_its_parent_dies(tmp_path: Path, lab_binary: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from lab.launcher import *\n"
        f"spec = LabSpec(vms=(VMSpec(name='t', disks=(DiskSpec(size=65536),)),))\n"
        f"lab = start_lab(spec, Path({str(tmp_path)!r}), binary=Path({str(lab_binary)!r}))\n"
        "print(lab.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        lab_pid = int(parent.stdout.readline())
        assert pid_alive(lab_pid)
        parent.kill()  # SIGKILL: no cleanup code runs in the parent
        parent.wait()
        assert wait_dead(lab_pid), "the lab outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout:
            parent.stdout.close()


def test_exits_on_stdin_eof_or_reparenting(tmp_path: Path, lab_binary: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"vms": [{"name": "t", "disks": [{"size": 65536}]}]}))
    cmd = [str(lab_binary), "-spec", str(spec), "-dir", str(tmp_path / "a")]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stdin is not None
    assert json.loads(proc.stdout.readline())["vms"][0]["name"] == "t"
    proc.stdin.close()  # the launcher's pipe closes when it dies
    assert proc.wait(5) == 0
    proc.stdout.close()
    # without stdin watching (no pipe), re-parenting to init is noticed too
    shell = subprocess.Popen(
        [
            "bash",
            "-c",
            " ".join(
                [
                    *cmd[:-1],
                    str(tmp_path / "b"),
                    "-watch-stdin=false",
                    "</dev/null >/dev/null 2>&1 & echo $!; sleep 60",
                ]
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert shell.stdout is not None
        pid = int(shell.stdout.readline())
        time.sleep(0.5)
        assert pid_alive(pid)
        shell.kill()
        shell.wait()
        assert wait_dead(pid), "the lab outlived its parent"
    finally:
        shell.kill()
        shell.wait()
        if shell.stdout:
            shell.stdout.close()


def test_python_m_lab_runs_until_interrupted(tmp_path: Path, lab_binary: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "lab",
        "--vms",
        "1",
        "--disks",
        "2",
        "--disk-size",
        "1M",
        "--disk-size",
        "513K",
        "--data-dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert "listening on http://127.0.0.1:" in lines[0], lines
        assert "vm1" in lines[2] and "2001: 525312 B" in lines[2]
        assert "control API" in lines[3]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert (tmp_path / "LocalDS_0" / "vm1" / "vm1_1-flat.vmdk").stat().st_size == 513 * 1024
    finally:
        proc.kill()
        proc.wait()
        for s in (proc.stdout, proc.stderr):
            if s:
                s.close()


def test_bad_specs_and_requests_are_reported(tmp_path: Path, lab_binary: Path, lab: Lab) -> None:
    with pytest.raises(ValueError, match="multiple of 1024"):
        DiskSpec(size=1000)
    with pytest.raises(ValueError, match="layout"):
        DiskSpec(size=1024, layout="sparse")
    bad = LabSpec(vms=(VMSpec(name="a/b", disks=(DiskSpec(size=1024),)),))
    with pytest.raises(LabError, match="invalid VM name"):
        launcher_start(bad, tmp_path / "bad", lab_binary)
    with pytest.raises(LabError, match="outside the disk"):
        lab.guest_write("vm1", 2000, 8 * 1024 * 1024 - 1, b"xx")
    with pytest.raises(LabError, match="no disk"):
        lab.guest_read("vm1", 2005, 0, 1)
    with pytest.raises(LabError, match="unknown fault type"):
        lab.fault("CurrentTime", "soap-fault", fault="NoSuchFault")
    with pytest.raises(LabError, match="task-error needs"):
        lab.fault("CurrentTime", "task-error")


def launcher_start(spec: LabSpec, workdir: Path, binary: Path) -> None:
    from lab.launcher import start_lab

    start_lab(spec, workdir, binary=binary, timeout=20).stop()
