"""One VCenter session per configured vCenter, made on first use, closed at the end."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import VCenterRow
from shared.runtime.bus import Permanent, Retryable
from shared.settings import Settings, VCenterSettings
from shared.vault import VaultError
from shared.vsphere import VCenter, VSphereError

T = TypeVar("T")


Loader = Callable[[str], VCenterSettings | None]


class VCenters:
    """The service's vCenter sessions, and the threads their blocking calls run on: a pool of
    their own, so that calls waiting minutes for vCenter tasks never starve the default pool
    (database writes, marks of life) of threads.

    Configured vCenters come from the settings; one added through the API is found with `load`
    (shared/catalog/vcenters.py `loader`) on first use and read again after `refresh` seconds, so
    that a changed URL or password is taken without a restart."""

    def __init__(
        self, settings: Settings, threads: int = 16, *, load: Loader | None = None, refresh: float = 30.0
    ) -> None:
        self._settings = {vc.name: vc for vc in settings.vcenters}
        self._load = load
        self._refresh = refresh
        self._stored: dict[str, tuple[VCenterSettings, float]] = {}
        self._open: dict[str, VCenter] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="vbm-vcenter")

    def settings_of(self, name: str) -> VCenterSettings:
        """The settings of vCenter `name`: configured, else stored (Permanent when neither, or
        when its password cannot be decrypted: that vCenter fails, nothing else)."""
        if name in self._settings:
            return self._settings[name]
        held = self._stored.get(name)
        if held is not None and time.monotonic() - held[1] < self._refresh:
            return held[0]
        found = None
        if self._load is not None:
            try:
                found = self._load(name)
            except VaultError as exc:
                raise Permanent(str(exc)) from None
        if found is None:
            self._stored.pop(name, None)
            self.forget(name)
            known = ", ".join(sorted(self._settings)) or "none"
            raise Permanent(
                f"vCenter {name!r} is not configured (configured: {known}; nor added through the API)"
            )
        if held is not None and held[0] != found:
            self.forget(name)  # changed: the next call logs in afresh
        self._stored[name] = (found, time.monotonic())
        return found

    def get(self, name: str) -> VCenter:
        vc = self.settings_of(name)
        if name not in self._open:
            self._open[name] = VCenter(vc)
        return self._open[name]

    def forget(self, name: str) -> None:
        """Drop the session of `name` (changed or removed): logged out in a thread of the pool."""
        self._stored.pop(name, None)
        vc = self._open.pop(name, None)
        if vc is not None:
            with contextlib.suppress(RuntimeError):  # the pool is shut down: the process ends
                self._pool.submit(vc.close)

    async def call(self, name: str, fn: Callable[[VCenter], T]) -> T:
        """Run a blocking adapter call in a thread; vSphere errors become Retryable/Permanent."""
        vc = self.get(name)
        try:
            # in the caller's context: the vCenter call's span is a child of the caller's span
            run = contextvars.copy_context().run
            return await asyncio.get_running_loop().run_in_executor(self._pool, run, fn, vc)
        except VSphereError as exc:
            if exc.retryable:
                raise Retryable(str(exc)) from exc
            raise Permanent(str(exc)) from exc

    def close(self) -> None:
        for vc in self._open.values():
            vc.close()
        self._open.clear()

    async def aclose(self) -> None:
        """Log out of every vCenter (in a thread: logouts are SOAP calls)."""
        await asyncio.to_thread(self.close)
        self._pool.shutdown(wait=False, cancel_futures=True)


def sync_rows(session: Session, settings: Settings, now: datetime) -> None:
    """Mirror the configured vCenters into the `vcenters` table (never their passwords); those
    added through the API stay (a configured one of the same name hides it, but does not erase it)."""
    wanted = {vc.name: vc for vc in settings.vcenters}
    for row in session.scalars(select(VCenterRow)):
        if row.name not in wanted and row.source != "api":
            session.delete(row)
    for name, vc in wanted.items():
        row = session.get(VCenterRow, name) or VCenterRow(name=name, source="config", created_at=now)
        if row.source == "api":
            continue
        row.url, row.username, row.verify_tls, row.updated_at = vc.url, vc.username, vc.verify_tls, now
        row.ca_file, row.hotadd_proxy = vc.ca_file, vc.hotadd_proxy
        session.add(row)
