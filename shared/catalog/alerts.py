"""Alerts: stored (for the API and UI) and published as `vbm.alert.raised`, once per key."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.catalog import listing
from shared.catalog.listing import Paged, Window
from shared.contracts import AlertRaised
from shared.db.models import Alert
from shared.runtime.outbox import stage

Severity = Literal["info", "warning", "error", "critical"]


def raise_alert(
    session: Session,
    *,
    key: str,
    kind: str,
    severity: Severity,
    message: str,
    now: datetime,
    vm_name: str | None = None,
    run_id: str | None = None,
) -> bool:
    """Record and publish an alert unless one with this key exists; True if it was new."""
    alert_id = f"alert-{hashlib.sha256(key.encode()).hexdigest()[:20]}"
    if session.get(Alert, alert_id) is not None:
        return False
    session.add(
        Alert(
            id=alert_id,
            kind=kind,
            severity=severity,
            message=message,
            vm_name=vm_name,
            run_id=run_id,
            created_at=now,
        )
    )
    stage(
        session,
        AlertRaised(
            occurred_at=now,
            alert_id=alert_id,
            severity=severity,
            kind=kind,
            message=message,
            vm_name=vm_name,
            run_id=run_id,
        ),
        now,
    )
    return True


def alert_view(alert: Alert) -> dict[str, object]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "vm_name": alert.vm_name,
        "run_id": alert.run_id,
        "created_at": alert.created_at.isoformat(),
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
    }


def list_alerts(
    session: Session,
    window: Window,
    *,
    everything: bool = False,
    severity: str | None = None,
    kind: str | None = None,
    vm: str | None = None,
) -> Paged:
    """Open (unacknowledged) alerts, or all of them, by creation time."""
    query = select(Alert)
    if not everything:
        query = query.where(Alert.acknowledged_at.is_(None))
    if severity:
        query = query.where(Alert.severity == severity)
    if kind:
        query = query.where(Alert.kind == kind)
    if vm:
        query = query.where(Alert.vm_name == vm)
    return listing.page(session, query, Alert.created_at, Alert.id, window)


FILTERS = ("all", "severity", "kind", "vm")


def alerts_page(session: Session, window: Window, **filters: Any) -> dict[str, Any]:
    """A page of alerts (`list_alerts`' filters) as the API and `vbm alerts ls --json` answer it."""
    found = list_alerts(session, window, **filters)
    return found.answer("alerts", [alert_view(a) for a in found.rows], window)


def acknowledge(session: Session, alert_id: str, now: datetime) -> Alert | None:
    """Mark an alert as seen (it leaves the open list); None when there is no such alert."""
    alert = session.get(Alert, alert_id)
    if alert is not None and alert.acknowledged_at is None:
        alert.acknowledged_at = now
    return alert
