"""The answers of /api/v1/restores and /api/v1/reports, as shared/catalog/restores.py
(restore_view) and shared/catalog/reports.py (report_view, the signed report) make them; and the
body of POST /api/v1/restores/{id}/migrate, which the handler reads by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.apidoc import page_of


class RestoreTarget(BaseModel):
    """Where the restore goes (its RestoreTarget), with what the request added."""

    model_config = ConfigDict(extra="allow")  # the mover notes what it did (in place: written)

    vcenter: str
    datacenter: str | None = None
    datastore: str = Field(description="new_vm, test, instant: where the VM goes; in_place: ''")
    name: str = Field(description="the VM: the new one, the test VM, or the one overwritten in place")
    folder: str | None = None
    resource_pool: str | None = None
    network: str | None = None
    power_on: bool = False
    disk_format: str = Field(
        "as_source", description="new_vm, test: as_source (each disk as backed up), thin or thick"
    )
    allow_unverified: bool = False
    requested_by: str | None = Field(None, description="who asked (a user, key or os:<user>), if recorded")
    vm_moref: str | None = Field(None, description="in_place: the VM overwritten")
    method: str | None = Field(None, description="in_place: full or fast")


class Restore(BaseModel):
    """A restore (restore_view)."""

    id: str
    restore_point_id: str
    repository: str
    vcenter: str
    mode: str = Field(description="new_vm, in_place, test or instant")
    target: RestoreTarget
    state: str = Field(description="queued, running, succeeded, failed or cancelled")
    phase: str
    bytes_done: int
    bytes_total: int
    rate: float = Field(description="bytes per second, while running")
    eta_s: float | None = Field(description="seconds left at the current rate, while running")
    vm_moref: str | None = Field(description="the VM made or overwritten, once known")
    error: str | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


Restores = page_of("Restores", "restores", Restore, "A page of restores, newest first unless order=asc.")


class MigrateRequest(BaseModel):
    """Where an instantly recovered VM moves to (Storage vMotion)."""

    datastore: str = Field(min_length=1, description="a production datastore")


class ReportSummary(BaseModel):
    id: str = Field(description="the restore test's restore id")
    restore_point_id: str
    vm_name: str
    ok: bool = Field(description="the test passed")
    created_at: datetime


class Reports(BaseModel):
    """Restore-test reports, newest first (at most 500)."""

    reports: list[ReportSummary]


class SignedReport(BaseModel):
    """A report as signed (shared/catalog/reports.py): verify the signature of the canonical JSON
    of `report` (keys sorted, no whitespace, UTF-8) with the key GET /api/v1/reports/public-key
    gives, or with `vbm report verify`."""

    report: dict[str, Any] = Field(
        description="kind, version, restore_id, result (passed/failed), restore_point, test_vm,"
        " checks, timings_s, started, finished, vbm"
    )
    signature: str = Field(description="base64 Ed25519 signature")
    key_id: str = Field(description="the first 16 hex digits of the SHA-256 of the raw public key")


class PublicKey(BaseModel):
    key_id: str
    public_key_pem: str = Field(description="the Ed25519 public key that verifies every report (PEM)")
