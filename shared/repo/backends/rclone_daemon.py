"""rclone's side of the rclone backend (shared/repo/backends/rclone.py): where an rclone://
location points, the `rclone rcd` daemon (one per process and config, on a loopback port with a
random password, dying with the process), and what its answers mean (errors, times)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.repo.errors import RepoError


class RcloneLocation:
    def __init__(self, location: str) -> None:
        parts = urlsplit(location)
        if parts.scheme != "rclone" or not parts.netloc or "@" in parts.netloc:
            raise ValueError(
                f"{location!r} is not an rclone location: write rclone://<remote>/<path>, where <remote> is"
                " a remote of the rclone config file (which holds its credentials)"
            )
        self.remote = parts.netloc
        self.path = parts.path.strip("/")
        self.fs = f"{self.remote}:{self.path}"
        self.location = location


class Daemon:
    """One `rclone rcd` on a loopback port, started on first use, stopped with the process."""

    def __init__(self, config: str | None, env: dict[str, str], flags: tuple[str, ...]) -> None:
        self.config, self.env, self.flags = config, env, flags
        self.user, self.password = "vbm", secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.lock = threading.Lock()

    def url(self) -> str:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            return f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        argv = [
            "rclone", "rcd", "--rc-addr", f"127.0.0.1:{self.port}", "--rc-user", self.user,
            "--rc-pass", self.password, "--rc-serve", *self.flags,
        ]  # fmt: skip
        if self.config:
            argv += ["--config", self.config]
        try:
            self.proc = subprocess.Popen(
                argv, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )  # fmt: skip
        except FileNotFoundError:
            raise RepoError("the rclone program is not installed (Debian: apt-get install rclone)") from None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RepoError(f"rclone rcd did not start (exit {self.proc.poll()}): check the rclone config")

    def stop(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


_daemons: dict[tuple[str | None, tuple[tuple[str, str], ...], tuple[str, ...]], Daemon] = {}
_daemons_lock = threading.Lock()


def daemon(config: str | None, env: dict[str, str], flags: tuple[str, ...]) -> Daemon:
    key = (config, tuple(sorted(env.items())), flags)
    with _daemons_lock:
        if key not in _daemons:
            _daemons[key] = Daemon(config, env, flags)
        return _daemons[key]


@atexit.register
def _stop_all() -> None:
    for daemon in list(_daemons.values()):
        daemon.stop()


TIMED_OUT = ("timeout", "timed out", "deadline exceeded")
CONNECTION = ("connection reset", "connection refused", "eof", "broken pipe", "no such host", "unreachable")


def meaning(message: str) -> str:
    """What an rclone error means, where its text tells (said before rclone's own words)."""
    low = message.lower()
    if any(m in low for m in TIMED_OUT):
        return "the provider timed out: "
    if any(m in low for m in CONNECTION):
        return "the provider's connection failed: "
    return ""


def what_it_said(exc: urllib.error.HTTPError) -> str:
    """What rclone's error answer says (JSON `error`, else its text), shortened."""
    try:
        body = exc.read(1 << 16)
    except (OSError, http.client.HTTPException):
        return ""
    try:
        return str(json.loads(body).get("error", ""))[:500]
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace").strip()[:500]


def mod_time(item: dict[str, Any]) -> datetime:
    raw = str(item.get("ModTime", "1970-01-01T00:00:00Z")).replace("Z", "+00:00")
    if "." in raw:  # Python wants at most 6 fractional digits
        head, _, rest = raw.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        raw = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(raw)
