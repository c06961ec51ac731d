"""Alerts: stored (for the API and UI) and published as `vbm.alert.raised`, once per key."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from sqlalchemy.orm import Session

from shared.contracts import AlertRaised
from shared.db.models import Alert
from shared.outbox import stage

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
