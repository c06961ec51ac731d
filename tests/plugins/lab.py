"""The vSphere lab for tests: govmomi's vCenter simulator extended by ``lab/vcsim``.

- ``lab_binary`` (session): builds the simulator once (cached by a hash of its Go sources).
- ``lab`` (function): a small default lab in ``tmp_path``, stopped after the test:
  VM ``vm1`` (CBT on, disks 2000: 8 MiB and 2001: 5 MiB + 3 KiB) and VM ``vm2``
  (CBT off, disk 2000: 1 MiB, random content).
- ``lab_factory`` (function): ``lab_factory(LabSpec(...))`` starts more labs (all stopped after).

A missing Go compiler or govmomi source fails the test (never skips), naming the install step.
"""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.launcher import INSTALL_HINT, DiskSpec, Lab, LabError, LabSpec, VMSpec, build_lab, start_lab

__all__ = [
    "DEFAULT_SPEC",
    "MiB",
    "RestClient",
    "changed_areas",
    "connect",
    "disconnect",
    "disks_of",
    "download",
    "find_vm",
    "folder_url",
    "wait_task",
]

MiB = 1024 * 1024

DEFAULT_SPEC = LabSpec(
    vms=(
        VMSpec(
            name="vm1",
            disks=(DiskSpec(size=8 * MiB, seed=1), DiskSpec(size=5 * MiB + 3 * 1024, seed=2)),
            cbt=True,
        ),
        VMSpec(name="vm2", disks=(DiskSpec(size=1 * MiB, seed=3, layout="random"),)),
    )
)


@pytest.fixture(scope="session")
def lab_binary() -> Path:
    """The compiled lab simulator (built once per session, cached across sessions)."""
    try:
        return build_lab()
    except LabError as e:
        pytest.fail(f"the vSphere lab is unavailable: {e}\n(install: {INSTALL_HINT})", pytrace=False)


@pytest.fixture
def lab_factory(lab_binary: Path, tmp_path: Path) -> Iterator[Callable[[LabSpec], Lab]]:
    """Start labs from specs, each in its own directory under tmp_path; all stopped after."""
    labs: list[Lab] = []

    def start(spec: LabSpec) -> Lab:
        workdir = tmp_path / f"lab{len(labs)}"
        try:
            lab = start_lab(spec, workdir, binary=lab_binary)
        except LabError as e:
            pytest.fail(f"the vSphere lab did not start: {e}", pytrace=False)
        labs.append(lab)
        return lab

    yield start
    for lab in labs:
        lab.stop()


@pytest.fixture
def lab(lab_factory: Callable[[LabSpec], Lab]) -> Lab:
    """A running default lab (DEFAULT_SPEC)."""
    return lab_factory(DEFAULT_SPEC)


# ------------------------------------------------------------------------- pyVmomi helpers


@pytest.fixture
def lab_si(lab: Lab) -> Iterator[Any]:
    """A pyVmomi ServiceInstance logged in to the default lab (over HTTP), disconnected after."""
    si = connect(lab)
    yield si
    disconnect(si)


def connect(lab: Lab) -> Any:
    from pyVim.connect import SmartConnect

    return SmartConnect(protocol="http", host=lab.host, port=lab.port, user=lab.username, pwd=lab.password)


def disconnect(si: Any) -> None:
    from pyVim.connect import Disconnect

    with contextlib.suppress(Exception):
        Disconnect(si)


def find_vm(si: Any, name: str) -> Any:
    vm = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
    assert vm is not None, f"no VM {name}"
    return vm


def disks_of(config: Any) -> dict[int, Any]:
    """Disk devices by key, from a VM's or a snapshot's config."""
    from pyVmomi import vim

    return {d.key: d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)}


def wait_task(task: Any) -> Any:
    from pyVim.task import WaitForTask

    WaitForTask(task)
    return task.info.result


def download(
    lab: Lab,
    ds_path: str,
    *,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
    datastore: str | None = None,
) -> bytes:
    """GET /folder/<path>?dcPath=DC0&dsName=LocalDS_0 (the way backup tools read a flat disk)."""
    req = urllib.request.Request(folder_url(lab, ds_path, datastore), headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data


def folder_url(lab: Lab, ds_path: str, datastore: str | None = None) -> str:
    return f"{lab.url}/folder/{urllib.parse.quote(ds_path)}?" + urllib.parse.urlencode(
        {"dcPath": lab.datacenter, "dsName": datastore or lab.datastore}
    )


class RestClient:
    """vCenter's vAPI REST tagging endpoints under /rest, called as a client would (urllib)."""

    def __init__(self, lab: Lab, username: str | None = None, password: str | None = None) -> None:
        self.base = lab.url + "/rest"
        user, pwd = username or lab.username, password or lab.password
        auth = base64.b64encode(f"{user}:{pwd}".encode()).decode()
        status, body = self.call(
            "POST", "/com/vmware/cis/session", headers={"Authorization": "Basic " + auth}
        )
        if status != 200:
            raise PermissionError(f"login: HTTP {status}")
        self.session: str = body["value"]

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if getattr(self, "session", None):
            req.add_header("vmware-api-session-id", self.session)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            e.close()
            return e.code, json.loads(raw) if raw.strip() else None

    def value(self, method: str, path: str, body: Any = None) -> Any:
        status, result = self.call(method, path, body)
        assert status == 200, (method, path, status, result)
        return result["value"] if result else None


def changed_areas(
    vm: Any, snap: Any, key: int, change_id: str, capacity: int
) -> tuple[list[tuple[int, int]], int]:
    """The full QueryChangedDiskAreas answer, paging from startOffset; returns (areas, calls)."""
    areas: list[tuple[int, int]] = []
    offset, calls = 0, 0
    while offset < capacity:
        info = vm.QueryChangedDiskAreas(snap, key, offset, change_id)
        calls += 1
        areas.extend((a.start, a.length) for a in info.changedArea or [])
        assert info.startOffset == offset and info.length > 0
        offset = info.startOffset + info.length
    return areas, calls
