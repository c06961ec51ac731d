"""Tables. Every change here needs a migration in shared/migrations/versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps in UTC, aware on the way out on every engine (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value} given for a UTC timestamp")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ServiceInstance(Base):
    """One process of a vbm service: when it started, where, and whether it stopped cleanly."""

    __tablename__ = "service_instances"

    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    service: Mapped[str] = mapped_column(String(32), index=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    # Written with every heartbeat: a process not seen for a few intervals is gone.
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    capacity: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # a mover's streams


JSONType = JSON().with_variant(JSONB(), "postgresql")


def ts() -> Mapped[datetime]:
    return mapped_column(UTCDateTime())


def _ts_null() -> Mapped[datetime | None]:
    return mapped_column(UTCDateTime(), nullable=True)


class VCenterRow(Base):
    """A vCenter vbm backs up from: configured ones mirrored (`source` "config", never their
    password), and those added through the API (`source` "api", the password encrypted with the
    secret key: shared/vault.py)."""

    __tablename__ = "vcenters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(512))
    username: Mapped[str] = mapped_column(String(255))
    verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    password: Mapped[str | None] = mapped_column(Text, nullable=True)  # a Fernet token, never plain
    ca_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    ca_file: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    hotadd_proxy: Mapped[str | None] = mapped_column(String(255), nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="config", server_default="config")
    created_at: Mapped[datetime | None] = _ts_null()
    updated_at: Mapped[datetime] = ts()


class Job(Base):
    """What to back up, when, how and where."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    vcenter: Mapped[str] = mapped_column(String(64))  # the default vCenter of its VMs and selectors
    vms: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    selection: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # select, exclude
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSONType)
    repository: Mapped[str] = mapped_column(String(1024))
    retention: Mapped[dict[str, Any]] = mapped_column(JSONType)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_slot: Mapped[datetime | None] = _ts_null()
    created_at: Mapped[datetime] = ts()
    updated_at: Mapped[datetime] = ts()


class Run(Base):
    """One execution of a job; its id is derived from the job and the schedule slot."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_created_at_id", "created_at", "id"),)  # lists page by time (0018)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    slot: Mapped[datetime | None] = _ts_null()
    state: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    wait_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # while queued: for what
    created_at: Mapped[datetime] = ts()
    started_at: Mapped[datetime | None] = _ts_null()
    finished_at: Mapped[datetime | None] = _ts_null()
    # the W3C trace context the run was asked for in (traceparent, tracestate): its trace (0022)
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSONType, nullable=True)


class Task(Base):
    """One VM of a run. `generation` fences late workers: a write must name the current one."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    vcenter: Mapped[str] = mapped_column(String(64))
    vm_moref: Mapped[str] = mapped_column(String(64))
    vm_name: Mapped[str] = mapped_column(String(255))
    phase: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    snapshot_moref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    restore_point_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0)
    rate: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Scheduling (docs/design.md, "Scheduling of work"): why it waits, not before when (a retry),
    # which try this is, what it noticed on the way (a quiesce fallback, a skipped disk), and
    # where the VM lives (the limits count snapshots per host and per datastore).
    wait_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    not_before: Mapped[datetime | None] = _ts_null()
    tries: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    warnings: Mapped[list[str]] = mapped_column(JSONType, default=list)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    datastores: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = ts()
    updated_at: Mapped[datetime] = ts()
    deadline_at: Mapped[datetime | None] = _ts_null()
    finished_at: Mapped[datetime | None] = _ts_null()


class RestorePointRow(Base):
    """The catalog: every committed restore point, for listing without reading the repository."""

    __tablename__ = "restore_points"
    __table_args__ = (Index("ix_restore_points_finished_at_id", "finished_at", "id"),)  # (0018)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str | None] = mapped_column(String(160), nullable=True, index=True)
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    vcenter: Mapped[str] = mapped_column(String(64))
    vm_moref: Mapped[str] = mapped_column(String(64), index=True)
    vm_name: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(16))
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    disks: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    logical_bytes: Mapped[int] = mapped_column(BigInteger)
    bytes_read: Mapped[int] = mapped_column(BigInteger)
    bytes_stored: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = ts()
    finished_at: Mapped[datetime] = ts()
    verify_state: Mapped[str] = mapped_column(String(16), default="pending")
    verified_at: Mapped[datetime | None] = _ts_null()
    verify_problems: Mapped[list[str]] = mapped_column(JSONType, default=list)
    verify_notes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    verify_how: Mapped[str | None] = mapped_column(String(16), nullable=True)
    verify_requested_at: Mapped[datetime | None] = _ts_null()
    # Per disk key (a string): {"sha256": hex or None, "by": "mover"|"verifier", "why": why not yet}
    sha256: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class Pruned(Base):
    """A restore point removed by retention: what, when and which rule let it go."""

    __tablename__ = "pruned"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    vm_name: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(1024))
    finished_at: Mapped[datetime] = ts()
    pruned_at: Mapped[datetime] = ts()
    reason: Mapped[str] = mapped_column(Text)


class VerifyRound(Base):
    """Scheduled re-verification of one repository: which slice of the chunk ids is read next.

    A round reads every chunk once, a slice per cycle; when the last slice is done, every restore
    point that existed when the round started has been re-verified.
    """

    __tablename__ = "verify_rounds"

    repository: Mapped[str] = mapped_column(String(1024), primary_key=True)
    slices: Mapped[int] = mapped_column(Integer)
    next_slice: Mapped[int] = mapped_column(Integer, default=0)
    round_started_at: Mapped[datetime] = ts()
    last_cycle_at: Mapped[datetime | None] = _ts_null()
    damaged: Mapped[list[str]] = mapped_column(JSONType, default=list)


class Restore(Base):
    """A restore (as a new VM): requested, then run by the mover, tracked like a backup task."""

    __tablename__ = "restores"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    restore_point_id: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    repository: Mapped[str] = mapped_column(String(1024))
    vcenter: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    target: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    rate: Mapped[float] = mapped_column(Float, default=0.0)
    vm_moref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = ts()
    started_at: Mapped[datetime | None] = _ts_null()
    updated_at: Mapped[datetime] = ts()
    deadline_at: Mapped[datetime | None] = _ts_null()
    finished_at: Mapped[datetime | None] = _ts_null()


class Replication(Base):
    """A verified restore point's copy to one secondary repository (`services/mover/replicate.py`).

    state: pending (requested, or waiting for `next_try_at` after a failure), running, done,
    failed (gave up after the last attempt; an alert names it)."""

    __tablename__ = "replications"
    __table_args__ = (UniqueConstraint("restore_point_id", "target"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    restore_point_id: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    chunks_sent: Mapped[int] = mapped_column(Integer, default=0)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = ts()
    updated_at: Mapped[datetime] = ts()
    finished_at: Mapped[datetime | None] = _ts_null()
    next_try_at: Mapped[datetime | None] = _ts_null()


class Notification(Base):
    """One message to one channel about one event (a run that ended, an alert); the delivery log.

    state: sent, or failed (its last attempt failed; `error` says why; redeliveries try again
    until the bus gives up). Its id is derived from the event and the channel, so a redelivered
    event never sends a message twice."""

    __tablename__ = "notifications"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event: Mapped[str] = mapped_column(String(255), index=True)
    channel: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = ts()
    sent_at: Mapped[datetime | None] = _ts_null()


class RestoreReport(Base):
    """The signed report of a restore test (`shared/catalog/reports.py`); `signed` is its JSON."""

    __tablename__ = "restore_reports"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    restore_point_id: Mapped[str] = mapped_column(String(64))
    vm_name: Mapped[str] = mapped_column(String(255), index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = ts()
    signed: Mapped[str] = mapped_column(Text)


class SnapshotLedger(Base):
    """Every snapshot vbm ever asked for, recorded before it is requested."""

    __tablename__ = "snapshot_ledger"

    snapshot_name: Mapped[str] = mapped_column(String(160), primary_key=True)
    vm_moref: Mapped[str] = mapped_column(String(64), primary_key=True)
    vcenter: Mapped[str] = mapped_column(String(64), primary_key=True)  # morefs repeat across vCenters
    vm_name: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(128))
    task_id: Mapped[str] = mapped_column(String(160))
    snapshot_moref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_at: Mapped[datetime] = ts()
    created_at: Mapped[datetime | None] = _ts_null()
    removed_at: Mapped[datetime | None] = _ts_null()
    next_attempt_at: Mapped[datetime | None] = _ts_null()


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    vm_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = ts()
    acknowledged_at: Mapped[datetime | None] = _ts_null()


class Outbox(Base):
    """Events written in the same transaction as the state they report; a relay publishes them."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(128))
    msg_id: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = ts()
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    # the W3C trace context it was staged in: the relay sends it as message headers (0022)
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSONType, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = ts()
    last_used_at: Mapped[datetime | None] = _ts_null()
    revoked_at: Mapped[datetime | None] = _ts_null()
    # the user the key belongs to, and the role it carries (at most the owner's): revision 0011
    owner: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = _ts_null()
