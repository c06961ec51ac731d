"""What the web UI's Restores list shows around the API's restore views (shared/catalog/restores.py
`restore_view`): the VM each restore point is of, the public phase, the progress and the
duration (so far), read from the same tables in the same session."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog.restores import FINAL, restore_view
from shared.clock import aware, iso
from shared.db.models import Restore, RestorePointRow
from shared.errors import Invalid
from shared.model.live import public_phase

STATES = ("queued", "running", *FINAL)
KINDS = {"new_vm": "New VM", "in_place": "In place", "test": "Restore test", "instant": "Instant recovery"}


def check_filters(state: str | None, kind: str | None) -> None:
    """Invalid (a 4xx naming the filter) for a state or kind no restore can have."""
    if state and state not in STATES:
        raise Invalid("state", f"{state!r} is not a restore state: one of {', '.join(STATES)}", "query")
    if kind and kind not in KINDS:
        raise Invalid("mode", f"{kind!r} is not a kind of restore: one of {', '.join(KINDS)}", "query")


def list_rows(session: Session, rows: Iterable[Restore], now: datetime) -> list[dict[str, Any]]:
    """A page's restores as `restore_view`s with the source VM's name and the restore point's
    time (None when it is gone from the catalog), the kind's label, the public phase, the
    percent done and the duration (so far, while it runs)."""
    rows = list(rows)
    query = select(RestorePointRow.id, RestorePointRow.vm_name, RestorePointRow.finished_at).where(
        RestorePointRow.id.in_({r.restore_point_id for r in rows})
    )
    points = {rp_id: (name, at) for rp_id, name, at in session.execute(query)} if rows else {}
    out = []
    for row in rows:
        view = restore_view(row)
        vm_name, point_at = points.get(row.restore_point_id, ("?", None))
        view.update(
            vm_name=vm_name,
            point_at=iso(point_at),
            kind=KINDS.get(row.mode, row.mode),
            public_phase=public_phase("restore", row.phase),
            percent=100 if row.state == "succeeded" else _percent(row.bytes_done, row.bytes_total),
            duration_s=_seconds(row.started_at, row.finished_at, now),
            requested_by=row.target.get("requested_by"),
        )
        out.append(view)
    return out


def _percent(done: int, total: int) -> int:
    return max(0, min(100, 100 * done // total)) if total > 0 else 0


def _seconds(start: datetime | None, end: datetime | None, now: datetime) -> int | None:
    if start is None:
        return None
    return max(0, int(((aware(end) if end else now) - aware(start)).total_seconds()))
