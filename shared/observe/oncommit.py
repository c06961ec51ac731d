"""Count what a transaction did only once it is committed: a task that ends in a transaction that
then rolls back (a Stale race, a crash) must not count as a backup that succeeded or failed."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_KEY = "vbm_after_commit"


def after_commit(session: Session, count: Callable[[], None]) -> None:
    """Run `count` when `session`'s transaction commits; forget it when it rolls back."""
    session.info.setdefault(_KEY, []).append(count)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for count in session.info.pop(_KEY, ()):
        try:
            count()
        except Exception:  # a metric never breaks the work it measures
            log.exception("counting a committed change failed")


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_KEY, None)
