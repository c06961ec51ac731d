"""Faults over HTTP: SOAP faults, failed/slow/hung tasks, broken downloads, SOAP outages."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import SmartConnect
from pyVmomi import vim, vmodl

from lab.launcher import Lab, LabError
from tests.plugins.lab import connect, disconnect, download, find_vm, wait_task


def snapshot_task(si: Any, name: str = "s") -> Any:
    return find_vm(si, "vm1").CreateSnapshot_Task(name, "", False, False)


def test_soap_fault_for_the_next_call_only(lab: Lab, lab_si: Any) -> None:
    lab.fault("CreateSnapshot_Task", "soap-fault", count=1)
    with pytest.raises(vmodl.fault.SystemError):
        snapshot_task(lab_si)
    assert lab.snapshots("vm1") == []
    wait_task(snapshot_task(lab_si))
    assert lab.snapshots("vm1") == ["s"]
    lab.fault("CurrentTime", "soap-fault", fault="InvalidState")
    for _ in range(2):  # persistent until cleared
        with pytest.raises(vim.fault.InvalidState):
            lab_si.CurrentTime()
    assert lab.state()["faults"]["methods"][0]["method"] == "CurrentTime"
    lab.clear_faults()
    assert lab_si.CurrentTime() is not None
    assert lab.state()["faults"]["methods"] == []


def test_task_error(lab: Lab, lab_si: Any) -> None:
    lab.fault("CreateSnapshot_Task", "task-error", fault="FileFault", count=1)
    task = snapshot_task(lab_si)
    with pytest.raises(vim.fault.FileFault):
        wait_task(task)
    assert task.info.state == "error" and task.info.entity == find_vm(lab_si, "vm1")
    assert lab.snapshots("vm1") == []
    wait_task(snapshot_task(lab_si))
    with pytest.raises(LabError, match="unknown mode"):
        lab.fault("CreateSnapshot_Task", "explode")


def test_delayed_call(lab: Lab, lab_si: Any) -> None:
    lab.fault("CurrentTime", "delay", delay=1.0, count=1)
    t0 = time.monotonic()
    lab_si.CurrentTime()
    assert time.monotonic() - t0 >= 1.0
    t0 = time.monotonic()
    lab_si.CurrentTime()
    assert time.monotonic() - t0 < 0.5


def test_slow_task_completes_after_the_client_gave_up(lab: Lab, lab_si: Any) -> None:
    lab.fault("CreateSnapshot_Task", "delay", delay=2.0, count=1)
    t0 = time.monotonic()
    task = snapshot_task(lab_si, "slow")
    assert time.monotonic() - t0 < 1.0  # the task is returned at once, still running
    assert task.info.state in ("queued", "running")
    assert lab.snapshots("vm1") == []  # a client timing out now finds nothing yet...
    wait_task(task)
    assert time.monotonic() - t0 >= 2.0
    assert lab.snapshots("vm1") == ["slow"]  # ...but the snapshot is there later
    assert task.info.result == find_vm(lab_si, "vm1").snapshot.currentSnapshot


def test_slow_response_with_client_timeout(lab: Lab) -> None:
    si = SmartConnect(
        protocol="http",
        host=lab.host,
        port=lab.port,
        user=lab.username,
        pwd=lab.password,
        httpConnectionTimeout=1,
    )
    try:
        lab.fault("CreateSnapshot_Task", "delay-response", delay=2.5, count=1)
        with pytest.raises((TimeoutError, socket.timeout, OSError)):
            snapshot_task(si, "late")
        deadline = time.monotonic() + 10
        while lab.snapshots("vm1") != ["late"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert lab.snapshots("vm1") == ["late"]
    finally:
        disconnect(si)


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except Exception as e:
            out.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def test_hang_until_cleared(lab: Lab, lab_si: Any) -> None:
    lab.fault("CurrentTime", "hang")
    t, out = run_in_thread(lab_si.CurrentTime)
    t.join(1.0)
    assert t.is_alive() and not out
    lab.clear_faults()
    t.join(5)
    assert not t.is_alive() and not isinstance(out[0], Exception)


def test_download_fail(lab: Lab) -> None:
    d = lab.vm("vm1")["disks"][0]
    lab.download_fault("fail", path="vm1-flat.vmdk", status=503, count=1)
    with pytest.raises(urllib.error.HTTPError) as err:
        download(lab, d["datastore_path"])
    assert err.value.code == 503
    err.value.close()
    assert download(lab, d["datastore_path"]) == Path(d["flat_path"]).read_bytes()


def test_download_cut(lab: Lab) -> None:
    d = lab.vm("vm1")["disks"][0]
    lab.download_fault("cut", after_bytes=100_000)
    with pytest.raises(http.client.IncompleteRead) as err:
        download(lab, d["datastore_path"])
    assert len(err.value.partial) == 100_000


def test_download_stall_then_resume(lab: Lab) -> None:
    d = lab.vm("vm1")["disks"][1]
    lab.download_fault("stall", path="vm1_1-flat", after_bytes=70_000)
    with pytest.raises((TimeoutError, socket.timeout)):
        download(lab, d["datastore_path"], timeout=1)
    lab.download_fault("stall", path="vm1_1-flat", after_bytes=70_000)
    t, out = run_in_thread(lambda: download(lab, d["datastore_path"], timeout=20))
    t.join(1.0)
    assert t.is_alive()
    lab.clear_faults()  # the stalled download resumes
    t.join(10)
    assert out == [Path(d["flat_path"]).read_bytes()]


def test_outage_503_then_recovery(lab: Lab, lab_si: Any) -> None:
    lab.outage(1.0)
    with pytest.raises(Exception):  # noqa: B017 - pyVmomi raises whatever the HTTP layer gives
        lab_si.CurrentTime()
    assert lab.state()["faults"]["outage"]["mode"] == "503"  # the control API still answers
    time.sleep(1.1)
    assert lab_si.CurrentTime() is not None


def test_outage_reset(lab: Lab) -> None:
    lab.outage(1.0, mode="reset")
    si: Any = None
    with pytest.raises(Exception):  # noqa: B017
        si = connect(lab)
    time.sleep(1.1)
    si = connect(lab)
    assert si.CurrentTime() is not None
    disconnect(si)


def test_outage_refuse(lab: Lab) -> None:
    lab.outage(1.5, mode="refuse")
    time.sleep(0.3)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((lab.host, lab.port), timeout=1).close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((lab.host, lab.port), timeout=1).close()
            break
        except ConnectionRefusedError:
            time.sleep(0.1)
    si = connect(lab)
    assert find_vm(si, "vm1").name == "vm1"
    disconnect(si)
