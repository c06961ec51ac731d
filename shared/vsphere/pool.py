"""One VCenter session per configured vCenter, made on first use, closed at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import VCenterRow
from shared.runtime.bus import Permanent, Retryable
from shared.settings import Settings
from shared.vsphere import VCenter, VSphereError

T = TypeVar("T")


class VCenters:
    """The service's vCenter sessions, and the threads their blocking calls run on: a pool of
    their own, so that calls waiting minutes for vCenter tasks never starve the default pool
    (database writes, marks of life) of threads."""

    def __init__(self, settings: Settings, threads: int = 16) -> None:
        self._settings = {vc.name: vc for vc in settings.vcenters}
        self._open: dict[str, VCenter] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="vbm-vcenter")

    def get(self, name: str) -> VCenter:
        if name not in self._settings:
            known = ", ".join(sorted(self._settings)) or "none"
            raise Permanent(f"vCenter {name!r} is not configured (configured: {known})")
        if name not in self._open:
            self._open[name] = VCenter(self._settings[name])
        return self._open[name]

    async def call(self, name: str, fn: Callable[[VCenter], T]) -> T:
        """Run a blocking adapter call in a thread; vSphere errors become Retryable/Permanent."""
        vc = self.get(name)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, vc)
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
    """Mirror the configured vCenters into the `vcenters` table (never their passwords)."""
    wanted = {vc.name: vc for vc in settings.vcenters}
    for row in session.scalars(select(VCenterRow)):
        if row.name not in wanted:
            session.delete(row)
    for name, vc in wanted.items():
        row = session.get(VCenterRow, name) or VCenterRow(name=name)
        row.url, row.username, row.verify_tls, row.updated_at = vc.url, vc.username, vc.verify_tls, now
        session.add(row)
