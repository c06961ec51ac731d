"""Catalog rows for the metrics tests, at a fixed time."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from shared.catalog.jobs import job_row
from shared.model.jobs import JobSpec

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def job(s: Session, name: str, enabled: bool = True) -> str:
    spec = JobSpec.model_validate(
        {"name": name, "vcenter": "vc1", "vms": [{"moref": "vm-1", "name": "web"}], "repository": "/r"}
    )
    row = job_row(spec, f"job-{name}", NOW, "/r")
    row.enabled = enabled
    s.add(row)
    return row.id
