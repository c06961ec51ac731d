"""The sections of the settings about who reaches vbm and how its own state is kept: the
gateway (and its TLS), people (passwords, lockout, sessions, keys), the configuration backup, and
who may read the metrics.
Import them from `shared.settings`, which re-exports every one."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class GatewaySettings(BaseModel):
    """Where the gateway listens and how (docs/design.md, "The gateway over TLS")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8420, ge=0, le=65535)
    tls: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="auto: HTTPS with tls_cert/tls_key when set, else plain HTTP on loopback and a"
        " self-signed certificate (<data_dir>/tls/) on any other address; on: HTTPS always; off: plain"
        " HTTP (on a non-loopback address only as an explicit choice, with a warning)",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate (chain) the gateway serves")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert (unencrypted)")
    events_heartbeat: float = Field(
        default=15.0, gt=0, le=300, description="Seconds between heartbeat comments on GET /api/v1/events"
    )
    events_poll: float = Field(
        default=0.5, gt=0, le=10, description="Seconds between the gateway's reads of the event log"
    )
    events_queue: int = Field(
        default=1000,
        ge=10,
        le=100000,
        description="State changes queued per live-events client before"
        " it is dropped as too slow (it resumes with Last-Event-ID)",
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> GatewaySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            raise ValueError(
                f"gateway.{given} is set but gateway.{missing} is not"
                f" (VBM_GATEWAY__{missing.upper()}): give both, or neither"
            )
        if self.tls == "off" and self.tls_cert is not None:
            raise ValueError(
                "gateway.tls is off but gateway.tls_cert/tls_key are set: unset them or set tls to on/auto"
            )
        return self


class ConfigBackupSettings(BaseModel):
    """vbm's own configuration backup (docs/design.md, "Configuration backup"): the scheduler
    writes one daily to `<location>/config-backups/` and keeps the newest `keep`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    at: str = Field(default="02:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Daily, UTC, HH:MM")
    location: str = Field(default="", description="A repository location; empty: the default repository")
    keep: int = Field(default=14, ge=1, le=1000)
    passphrase: SecretStr | None = Field(default=None, description="Encrypts the backups (>= 12 characters)")
    passphrase_file: Path | None = Field(
        default=None, description="A file whose first line is the passphrase"
    )


class SecuritySettings(BaseModel):
    """People: password rules, lockout after failed logins, browser session timeouts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    password_min_length: int = Field(default=12, ge=8, le=128)
    lockout_after: int = Field(
        default=5, ge=1, le=100, description="Failed logins in a row before the account waits"
    )
    lockout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="The first wait; it doubles with every further failure (at most 15 min)",
    )
    session_idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    session_max_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    api_key_max_days: int | None = Field(
        default=None, ge=1, description="The longest life a new API key may have; unset: keys may not expire"
    )


class AuditSettings(BaseModel):
    """The audit log (docs/design.md, "Audit log"): how long its records are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retention_days: int = Field(
        default=400, ge=1, le=36500, description="Audit records older than this are pruned (daily)"
    )
    auto_prune: bool = Field(
        default=True,
        description="The scheduler prunes the audit log daily; false: only `vbm audit prune` does"
        " (e.g. when the services' PostgreSQL role may not DELETE from audit_log)",
    )


class MetricsSettings(BaseModel):
    """Prometheus metrics (docs/design.md, "Metrics"). The gateway serves `/metrics` on its own
    port (an API key with metrics:read, unless `public`); with `port` set, each service also
    serves its `/metrics` there without a key (the gateway's with the catalog's gauges), for a
    Prometheus on a private network. `vbm up` serves its whole tree on `port` instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of a service's /metrics without a key (0: off); under `vbm up`, of the"
        " supervisor's endpoint of every service",
    )
    host: str = Field(default="127.0.0.1", description="Address that metrics port listens on")
    public: bool = Field(
        default=False,
        description="The gateway's /metrics on its API port answers without an API key (by default it"
        " needs a key whose role holds metrics:read, as `Authorization: Bearer <key>` or X-API-Key)",
    )
