"""Build and start the vSphere lab: govmomi's vCenter simulator extended by ``lab/vcsim``.

``build_lab()`` compiles the Go program once per source change (offline, GOPATH mode, against
Debian's govmomi); ``start_lab(spec, workdir)`` runs one private simulator and returns a ``Lab``
with its address, inventory and a client for the control API (faults, guest writes).
See docs/lab.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from lab.build import GOVMOMI_SRC, INSTALL_HINT, LabError, build_lab
from lab.model import DatastoreSpec, DiskSpec, LabSpec, TagCategorySpec, TagRef, VMSpec
from shared.runtime.process import die_with_parent

__all__ = [
    "GOVMOMI_SRC",
    "INSTALL_HINT",
    "DatastoreSpec",
    "DiskSpec",
    "Lab",
    "LabError",
    "LabSpec",
    "TagCategorySpec",
    "TagRef",
    "VMSpec",
    "build_lab",
    "start_lab",
]


class Lab:
    """A running lab: its address, inventory and control API (see docs/lab.md)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], inventory: dict[str, Any], log: IO[bytes], log_path: Path
    ) -> None:
        self._proc = proc
        self._log = log
        self.log_path = log_path
        self.inventory = inventory
        self.url: str = inventory["url"]
        self.sdk_url: str = inventory["sdk_url"]
        self.host: str = inventory["host"]
        self.port: int = int(inventory["port"])
        self.username: str = inventory["username"]
        self.password: str = inventory["password"]
        self.datacenter: str = inventory["datacenter"]
        self.datastore: str = inventory["datastore"]
        self.datastore_dir = Path(inventory["datastore_dir"])
        # hot-add: a disk attached to a VM is linked here as wwn-0x<uuid> (see docs/lab.md)
        self.device_dir = self.datastore_dir.parent / "dev" / "disk" / "by-id"
        self.pid: int = proc.pid

    def __repr__(self) -> str:
        return f"<Lab {self.url} pid={self.pid}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def vm(self, name: str) -> dict[str, Any]:
        for vm in self.inventory["vms"]:
            if vm["name"] == name:
                return dict(vm)
        raise KeyError(f"no VM {name!r} in the lab")

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self._proc.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL (by pid) after `timeout`; idempotent."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._close()

    def _close(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---------------------------------------------------------------- control API (urllib)

    def _call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, timeout: float = 30
    ) -> bytes:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + "/lab/" + path, data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                result: bytes = resp.read()
                return result
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            e.close()
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]
            raise LabError(f"lab {method} /lab/{path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise LabError(f"lab {method} /lab/{path}: {e}") from e

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        return json.loads(self._call(method, path, body))

    def state(self) -> dict[str, Any]:
        """GET /lab/state: VMs (power, CBT, snapshots, disk chains) and armed faults."""
        result: dict[str, Any] = self._json("GET", "state")
        return result

    def fault(
        self,
        method: str,
        mode: str,
        *,
        count: int | None = None,
        delay: float = 0,
        fault: str = "SystemError",
    ) -> None:
        """Arm a fault for a SOAP method: soap-fault | task-error | delay | delay-response | hang."""
        body = {"method": method, "mode": mode, "count": count or -1, "delay": delay, "fault": fault}
        self._json("POST", "faults", body)

    def download_fault(
        self, mode: str, *, path: str = "", after_bytes: int = 0, status: int = 500, count: int | None = None
    ) -> None:
        """Break GET /folder/... downloads (fail | stall | cut) or PUT uploads (upload-fail | upload-cut)
        whose path contains `path`."""
        body = {
            "mode": mode,
            "path": path,
            "after_bytes": after_bytes,
            "status": status,
            "count": count or -1,
        }
        self._json("POST", "download-faults", body)

    def outage(self, seconds: float, mode: str = "503") -> None:
        """Make the SOAP endpoint unavailable: "503", "reset" (connection reset) or "refuse"
        (the port is closed: connection refused, control API included)."""
        self._json("POST", "outage", {"seconds": seconds, "mode": mode})

    def clear_faults(self) -> None:
        """Disarm every fault; hung calls go on, stalled downloads resume, delays end."""
        self._json("POST", "clear", {})

    def _disk_path(self, vm: str, disk_key: int, op: str, **query: int) -> str:
        q = urllib.parse.urlencode(query)
        return f"vms/{urllib.parse.quote(vm, safe='')}/disks/{disk_key}/{op}?{q}"

    def guest_write(self, vm: str, disk_key: int, offset: int, data: bytes) -> None:
        """Write as the guest: to the disk, or to its delta while a snapshot exists (CBT-tracked)."""
        self._call("POST", self._disk_path(vm, disk_key, "write", offset=offset), raw=bytes(data))

    def guest_read(self, vm: str, disk_key: int, offset: int, length: int) -> bytes:
        """The guest's current view (base + deltas)."""
        return self._call("GET", self._disk_path(vm, disk_key, "read", offset=offset, length=length))

    def snapshots(self, vm: str) -> list[str]:
        """Names of the snapshots currently on the VM (tree order)."""
        path = f"vms/{urllib.parse.quote(vm, safe='')}/snapshots"
        return [s["name"] for s in self._json("GET", path)]

    # ------------------------------------------------------------- inventory added at run time

    @property
    def datastores(self) -> list[dict[str, Any]]:
        """The lab's datastores: [{"name", "dir", "moref", "latency_ms", "bandwidth_mbps"}]."""
        default = [{"name": self.datastore, "dir": str(self.datastore_dir)}]
        return [dict(d) for d in self.inventory.get("datastores") or default]

    def add_vm(self, spec: VMSpec | Mapping[str, Any], *, timeout: float = 300) -> dict[str, Any]:
        """POST /lab/vms: create a VM (as at start-up: real disks, CBT, deltas, guest writes) and
        answer its inventory entry, also added to ``inventory["vms"]``. A mapping is read as in a
        spec file (sizes such as "64M", tags as "category:tag")."""
        if isinstance(spec, VMSpec):
            body: Any = asdict(spec)
        else:
            from lab.spec import vm_from_dict

            body = asdict(vm_from_dict(dict(spec), where="vm"))
        entry: dict[str, Any] = json.loads(self._call("POST", "vms", body, timeout=timeout))
        self.inventory["vms"].append(entry)
        return entry

    def disk_sha256(self, vm: str, key: int, snapshot: str | None = None) -> str:
        """SHA-256 (hex) of a disk's content as the guest sees it now, or as `snapshot` (a moref)
        froze it; computed by the lab over the flattened chain. `key`: device key or index."""
        q = f"?{urllib.parse.urlencode({'snapshot': snapshot})}" if snapshot else ""
        path = f"vms/{urllib.parse.quote(vm, safe='')}/disks/{key}/sha256{q}"
        digest: str = json.loads(self._call("GET", path, timeout=600))["sha256"]
        return digest

    def datastore_limits(
        self, name: str, *, latency_ms: float | None = None, bandwidth_mbps: float | None = None
    ) -> dict[str, Any]:
        """Slow a datastore's /folder/ reads: `latency_ms` before each first byte, `bandwidth_mbps`
        for all its downloads together (0 = none; None = unchanged). Answers the limits now set."""
        body = {
            k: v for k, v in (("latency_ms", latency_ms), ("bandwidth_mbps", bandwidth_mbps)) if v is not None
        }
        path = f"datastores/{urllib.parse.quote(name, safe='')}/limits"
        result: dict[str, Any] = self._json("POST", path, body)
        return result

    def datastore_stats(self, name: str) -> dict[str, Any]:
        """{"in_flight", "max_in_flight", "requests", "bytes"} of the datastore's /folder/ reads."""
        result: dict[str, Any] = self._json("GET", f"datastores/{urllib.parse.quote(name, safe='')}/stats")
        return result

    def reset_datastore_stats(self, name: str) -> dict[str, Any]:
        path = f"datastores/{urllib.parse.quote(name, safe='')}/stats/reset"
        result: dict[str, Any] = self._json("POST", path, {})
        return result

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The /folder/ GET/HEAD requests after sequence number `since` (the last 10,000 kept):
        seq, datastore, path, method, range, start_ms, end_ms (None while in flight), bytes, status."""
        result: list[dict[str, Any]] = self._json("GET", f"requests?since={int(since)}")
        return result

    def snapshot_accounting(self) -> dict[str, Any]:
        """GET /lab/snapshots: "open" (the snapshots open now) and the high-water marks since the
        last reset: max_open, max_open_per_datastore, max_open_per_host, max_open_per_vm,
        max_open_on_one_vm."""
        result: dict[str, Any] = self._json("GET", "snapshots")
        return result

    def open_snapshots(self) -> list[dict[str, Any]]:
        """The snapshots open now: vm, vm_moref, moref, name, description, datastore, host, created."""
        result: list[dict[str, Any]] = self.snapshot_accounting()["open"]
        return result

    def reset_snapshot_accounting(self) -> dict[str, Any]:
        """Start the high-water marks again from the snapshots open now."""
        result: dict[str, Any] = self._json("POST", "snapshots/reset", {})
        return result


def start_lab(
    spec: LabSpec,
    workdir: Path,
    *,
    port: int = 0,
    binary: Path | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> Lab:
    """Start one simulator serving `spec`, its datastore under `workdir`; wait for its inventory."""
    binary = binary or build_lab()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / "lab-spec.json"
    spec_path.write_text(json.dumps(asdict(spec)))
    log_path = workdir / "vcsim.log"
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the Lab, closed by stop()
    cmd = [str(binary), "-spec", str(spec_path), "-dir", str(workdir), "-port", str(port)]
    try:
        proc = subprocess.Popen(
            cmd,
            env=env,  # None: this process's; vbm up gives it a bare one (no secrets)
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=die_with_parent(),
            start_new_session=True,  # Ctrl-C goes to the parent, which stops the lab
        )
    except OSError as e:
        log.close()
        raise LabError(f"cannot run {binary}: {e}") from e
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            line += chunk
    try:
        inventory = json.loads(line)
    except ValueError:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        log.close()
        lab_log = log_path.read_text(errors="replace")[-3000:]
        raise LabError(f"the lab did not start (output {line[:200]!r}); its log:\n{lab_log}") from None
    return Lab(proc, inventory, log, log_path)
