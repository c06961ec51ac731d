"""The watchdog of an SFTP connection (shared/repo/backends/sftp.py): a call on which nothing
moves for the timeout aborts the connection, so its pending requests fail at once."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncssh is loaded by sftp.py, its DSA warning silenced
    import asyncssh


class Activity:
    """When anything last moved on one connection (every call using it shares this)."""

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()


class Watchdog:
    """Aborts the connection when nothing has moved on it for `timeout` seconds while this call
    waits (a stalled server or network): the pending requests then fail at once, instead of
    waiting for answers, or for a clean close, that never come. Progress of any call on the
    connection counts: many calls share it, and on a slow link each waits its turn."""

    def __init__(self, conn: asyncssh.SSHClientConnection, timeout: float, activity: Activity) -> None:
        self._conn, self._timeout, self._activity = conn, timeout, activity
        self._loop = asyncio.get_running_loop()
        self.fired = False
        self._timer = self._loop.call_later(timeout, self._fire)

    def progress(self) -> None:
        self._activity.last = self._loop.time()
        self._timer.cancel()
        if not self.fired:
            self._timer = self._loop.call_later(self._timeout, self._fire)

    def _fire(self) -> None:
        idle = self._loop.time() - self._activity.last
        if idle < self._timeout:  # another call moved data meanwhile: the link is alive
            self._timer = self._loop.call_later(self._timeout - idle, self._fire)
            return
        self.fired = True
        self._conn.abort()

    def cancel(self) -> None:
        self._timer.cancel()


watching: ContextVar[Watchdog | None] = ContextVar("sftp_watchdog", default=None)


def progress() -> None:
    """The current call moved data: its watchdog waits `timeout` again."""
    watch = watching.get()
    if watch is not None:
        watch.progress()
