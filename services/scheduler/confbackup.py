"""The scheduler's daily configuration backup (shared/confbackup/scheduled.py): a round a minute."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.exc import SQLAlchemyError

from shared.confbackup.scheduled import backup_round
from shared.runtime.service import Context

log = logging.getLogger(__name__)

ROUND_SECONDS = 60.0


class ConfigBackupLoop:
    def __init__(self, ctx: Context, every: float = ROUND_SECONDS) -> None:
        self.ctx = ctx
        self.every = every

    async def run(self) -> None:
        while not self.ctx.stop.is_set():
            try:
                done = await backup_round(self.ctx.settings, self.ctx.sessions, self.ctx.clock())
            except SQLAlchemyError as exc:  # the database away or busy: the next round retries
                log.warning("configuration backup round failed, retrying: %s", exc)
            else:
                if done.skipped in ("no passphrase", "failed"):
                    self.ctx.relay.kick()  # the alert it raised goes out now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stop.wait(), self.every)
