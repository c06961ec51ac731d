"""Answers of /api/v1/runs, /api/v1/backups, /api/v1/replications, prune, gc and repositories, as
the catalog's view functions make them (shared/catalog/runs.py, replication.py, prune.py, usage.py,
manifest_json.py). Times are RFC 3339 strings in UTC; a field that can be null says so."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.gateway.apidoc import page_of
from shared.repo.manifest import RestorePoint


class RunAnswer(BaseModel):
    """A run of a job (shared/catalog/runs.py: run_view)."""

    id: str
    job_id: str
    trigger: str = Field(description="schedule, manual, api, ...")
    slot: str | None = Field(description="the schedule slot it runs for; null for a manual run")
    state: str = Field(description="queued, running, succeeded, warning, failed, cancelled")
    finished: bool
    error: str | None
    cancel_requested: bool
    wait_reason: str | None = Field(description="while queued: what it waits for")
    created_at: str
    started_at: str | None
    finished_at: str | None


class TaskAnswer(BaseModel):
    """One VM of a run (shared/catalog/runs.py: task_view)."""

    id: str
    vcenter: str
    vm_moref: str
    vm_name: str
    phase: str
    state: str
    outcome: str = Field(description="the state, or warning for a success with warnings")
    wait_reason: str | None
    not_before: str | None
    tries: int
    warnings: list[str]
    host: str | None
    datastores: list[str]
    kind: str | None = Field(description="full or incremental, once known")
    bytes_done: int
    bytes_total: int
    bytes_read: int
    bytes_stored: int
    rate: float = Field(description="bytes per second")
    eta_s: float | None = Field(description="seconds left at the current rate, while moving bytes")
    snapshot_moref: str | None
    restore_point_id: str | None
    error: str | None
    created_at: str
    updated_at: str
    finished_at: str | None


class RunDetail(RunAnswer):
    """A run with its tasks."""

    tasks: list[TaskAnswer]


class LogLine(BaseModel):
    id: int = Field(description="give it as after= to get the lines after this one")
    at: str
    level: str
    task_id: str | None
    message: str


class RunLog(BaseModel):
    """What happened to a run, in words, oldest first."""

    run_id: str
    lines: list[LogLine]


class BackupAnswer(BaseModel):
    """A restore point of the catalog (shared/catalog/runs.py: backup_view)."""

    id: str
    job_id: str | None
    run_id: str | None
    task_id: str | None
    vcenter: str
    vm_moref: str
    vm_name: str
    repository: str
    kind: str = Field(description="full or incremental")
    parent: str | None
    disks: list[dict[str, Any]]
    logical_bytes: int
    bytes_read: int
    bytes_stored: int
    started_at: str
    finished_at: str
    verify_state: str = Field(description="pending, ok, failed, ...")
    verified_at: str | None
    verify_problems: list[str]
    verify_notes: list[str]
    verify_how: str | None
    verify_requested_at: str | None
    pinned: bool = Field(description="retention never removes it")


class ReplicationAnswer(BaseModel):
    """A copy of a restore point to a secondary repository (shared/catalog/replication.py: view)."""

    id: str
    restore_point_id: str
    target: str
    state: str = Field(description="pending, running, done or failed")
    attempts: int
    chunks_sent: int
    bytes_sent: int
    error: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    next_try_at: str | None


class BackupDetail(BackupAnswer):
    """A restore point with its copies and its manifest as the repository holds it."""

    replications: list[ReplicationAnswer]
    manifest: RestorePoint | None = Field(description="null when the repository cannot be read")
    manifest_error: str | None = Field(description="why the manifest could not be read")


RunPage = page_of("RunPage", "runs", RunAnswer)
BackupPage = page_of("BackupPage", "backups", BackupAnswer)
ReplicationPage = page_of("ReplicationPage", "replications", ReplicationAnswer)


class VerifyQueued(BaseModel):
    """A verification asked for: the verifier reads every chunk; the result lands on the point."""

    request_id: str
    restore_point_id: str
    status: str = Field(description="queued")


class PrunePoint(BaseModel):
    """What retention does to one restore point now (shared/catalog/prune.py: with_expiry)."""

    id: str
    job_id: str | None
    vm_name: str
    finished_at: str
    verify_state: str
    pinned: bool
    action: str = Field(description="keep or remove")
    rule: str = Field(description="the retention rule that decided")
    expires_at: str | None = Field(description="when retention is expected to let a kept point go")


class PrunePreview(BaseModel):
    restore_points: list[PrunePoint]


class Removed(BaseModel):
    id: str
    rule: str


class PruneDone(BaseModel):
    """The restore points removed (run gc after to reclaim their chunks)."""

    removed: list[Removed]


class GCRepository(BaseModel):
    """What garbage collection did (or would do, dry_run) in one repository."""

    repository: str
    restore_points: int
    chunks_referenced: int
    chunks_removed: int
    bytes_removed: int
    chunks_spared_young: int = Field(description="unreferenced but too recent: a backup may use them")
    leftovers_removed: int
    chunks_put_back: int
    stopped_early: bool = Field(description="its time was up: run gc again")
    dry_run: bool


class GCDone(BaseModel):
    repositories: list[GCRepository]


class UsageDay(BaseModel):
    day: str
    total: int | None
    free: int | None
    stored: int
    logical: int


class RepositoryUsage(BaseModel):
    """A repository's usage as of its latest sample (shared/catalog/usage.py)."""

    repository: str
    total: int | None
    free: int | None
    used_percent: float | None
    stored: int | None
    logical: int
    reduction: float | None
    dedup_ratio: float | None
    compression_ratio: float | None
    restore_points: int
    per_vm: dict[str, int]
    per_job: dict[str, int]
    sampled_at: str | None = Field(description="null before the first measurement")
    samples: list[UsageDay] = Field(description="daily samples, newest first (growth)")


class Repositories(BaseModel):
    repositories: list[RepositoryUsage]


class Unmeasured(BaseModel):
    """A repository that could not be measured."""

    repository: str
    error: str


class Measured(BaseModel):
    repositories: list[RepositoryUsage | Unmeasured]


class ManifestFile(BaseModel):
    path: str
    size_bytes: int
    sha256: str | None
    sha256_missing: str | None = Field(None, description="why there is no SHA-256 (yet)")


class ManifestDisk(BaseModel):
    key: int
    label: str
    file: str
    capacity: int
    chunk_size: int
    change_id: str | None
    built_on: str | None
    blake3_tree: str
    sha256_by: str | None


class ManifestVbm(BaseModel):
    """vbm's own fields of a manifest.json."""

    restore_point: str
    parent: str | None
    kind: str
    run_id: str | None
    repository: str | None
    manifest: str
    sha256_object: str | None
    vm_moref: str | None
    snapshot_moref: str | None
    verify_state: str | None
    chunk_hash: str
    disks: list[ManifestDisk]
    skipped: list[dict[str, Any]]
    immutable_until: str | None


class ManifestJson(BaseModel):
    """Every file of a restore point with its SHA-256, checkable with sha256sum."""

    job_id: str | None
    vm_name: str
    vcenter: str | None
    started: str
    finished: str
    snapshot: str | None
    files: list[ManifestFile]
    vbm: ManifestVbm
