"""Settings: one model for every service, read from `VBM_*` variables and an optional TOML file.

Precedence, highest first: values passed in code, environment variables (`VBM_` prefix, `__`
between nested names, e.g. `VBM_GATEWAY__PORT=9000`), the TOML file named by `VBM_CONFIG`
(default `<data_dir>/vbm.toml` when that exists), then the defaults below.

Nothing here is read at import time: call `load_settings()` in a service's wiring function.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.model.retention import Policy

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ConfigError(Exception):
    """A setting is wrong; the message says which and what to do."""


class VCenterSettings(BaseModel):
    """One vCenter (or ESXi host) that jobs can back up from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(description="SDK endpoint, e.g. https://vcsa.example.com/sdk")
    username: str
    password: SecretStr
    verify_tls: bool = True
    ca_file: str | None = None  # PEM of the CA that signed its certificate; default: the system's
    hotadd_proxy: str | None = Field(
        default=None,
        description="Name or moref of the VM vbm runs in, in this vCenter: fast in-place restores"
        " attach the target VM's disks to it (hot-add) and write only the windows that differ",
    )

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for the lab), e.g. https://vcsa/sdk")
        return value.rstrip("/")


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8420, ge=0, le=65535)


class NatsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        default=None,
        description="NATS server(s), comma separated. Unset: `vbm up` runs an embedded server.",
    )
    embedded_port: int = Field(default=4223, ge=1, le=65535)
    stream_replicas: int = Field(default=1, ge=1, le=5)
    connect_timeout: float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _nats_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for part in value.split(","):
            if not part.strip().startswith(("nats://", "tls://")):
                raise ValueError(f"{part.strip()!r} must start with nats:// or tls://")
        return value

    def server_url(self) -> str:
        return self.url or f"nats://127.0.0.1:{self.embedded_port}"


class LabSettings(BaseModel):
    """The vCenter simulator `vbm up` starts when no vCenter is configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    port: int = Field(default=8989, ge=0, le=65535)
    vms: int = Field(default=3, ge=1, le=50)
    disks_per_vm: int = Field(default=2, ge=1, le=8)
    disk_size_mib: int = Field(default=64, ge=1, le=65536)
    spec: Path | None = Field(
        default=None,
        description="A lab spec file (JSON or TOML, docs/lab.md): VMs, disks, folders, tags, datastores;"
        " replaces vms/disks_per_vm/disk_size_mib",
    )


class PipelineSettings(BaseModel):
    """Deadlines and retries of the backup pipeline (seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    snapshot_timeout: float = Field(default=900, gt=0, description="Create or remove a snapshot")
    transfer_stall: float = Field(
        default=600, gt=0, description="A transfer with no progress for this long has failed"
    )
    verify_timeout: float = Field(default=4 * 3600, gt=0)
    cleanup_attempts: int = Field(
        default=5, ge=1, description="Snapshot removals tried before an alert names the VM"
    )
    cleanup_backoff: float = Field(default=30, gt=0, description="First retry delay, doubling")
    watchdog_interval: float = Field(default=5, gt=0)
    ack_wait: float = Field(
        default=60, gt=0, description="A silent worker's message is redelivered after this long"
    )
    workers: int = Field(default=0, ge=0, description="Chunk workers per disk stream (0: by CPU count)")
    restore_test_boot: float = Field(
        default=300, gt=0, description="A restore test waits this long for the guest heartbeat"
    )
    retries: int = Field(
        default=2, ge=0, le=10, description="A VM that fails is tried again this many times within its run"
    )
    retry_wait: float = Field(default=300, ge=0, description="Seconds between a VM's failed try and the next")
    dispatch_interval: float = Field(
        default=1.0, gt=0, le=60, description="How often waiting VMs are looked at (also on every event)"
    )


class LimitSettings(BaseModel):
    """What protects production while backups run (docs/design.md, "Scheduling of work").

    Snapshots are counted per datastore (a VM counts on every datastore it has disks on) and per
    ESXi host; disk streams (reads in flight) per datastore, host and repository. A job may lower
    `vms_per_job` for itself (`options.max_parallel_vms`). 0 means no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    snapshots_per_datastore: int = Field(default=4, ge=0, le=1000)
    snapshots_per_host: int = Field(default=4, ge=0, le=1000)
    streams_per_datastore: int = Field(default=4, ge=0, le=1000)
    streams_per_host: int = Field(default=8, ge=0, le=1000)
    streams_per_repository: int = Field(default=8, ge=0, le=1000)
    vms_per_job: int = Field(default=0, ge=0, le=10000, description="VMs of one job at once (0: no limit)")
    latency_ms: float = Field(
        default=20.0,
        ge=0,
        description="Storage latency control: a datastore answering reads slower than this (time to"
        " first byte) gets fewer streams, until it recovers (0: off)",
    )


class MoverSettings(BaseModel):
    """One mover process: how much it moves at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    streams: int = Field(
        default=3,
        ge=1,
        le=32,
        description="Disk streams at once (a VM takes one, its other disks use free ones); each"
        " stream holds about workers x 2 x 4 MiB of memory",
    )


class VerifySettings(BaseModel):
    """Scheduled re-verification: every chunk of every repository re-read once per round."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reverify: bool = Field(default=True, description="Re-verify restore points on a schedule")
    usage_seconds: float = Field(default=300, gt=0, description="How often repository usage is sampled")
    gc_seconds: float = Field(
        default=86400, gt=0, description="How often each repository is garbage-collected"
    )
    usage_alert_percent: float = Field(
        default=80,
        gt=0,
        le=100,
        description="Alert when a repository's storage is this full (once per crossing)",
    )
    round_cycles: int = Field(
        default=30, ge=1, le=3650, description="Cycles per round: each reads 1/round_cycles of the chunks"
    )
    cycle_seconds: float = Field(
        default=86400, gt=0, description="Seconds between cycles (a round takes round_cycles x this)"
    )


class S3Settings(BaseModel):
    """Credentials for repositories at s3:// locations (never logged, never in a location)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    access_key: str = ""
    secret_key: SecretStr = SecretStr("")


class AzureSettings(BaseModel):
    """The storage account key for repositories at azure:// locations (never logged)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account_key: SecretStr = SecretStr("")


class SFTPSettings(BaseModel):
    """How repositories at sftp:// locations log in (never logged)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_file: str | None = Field(default=None, description="Private key file (else the SSH agent's keys)")
    password: SecretStr = SecretStr("")
    known_hosts: str | None = Field(default=None, description="Default: ~/.ssh/known_hosts")


class RcloneSettings(BaseModel):
    """Where rclone:// locations find their remotes (the provider credentials stay in it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str | None = Field(default=None, description="rclone config file; default: rclone's own")


class ReplicationSettings(BaseModel):
    """Copies of restore points to secondary repositories (a job's options.replicate_to)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bandwidth_mbps: float = Field(default=0, ge=0, description="Megabits a second per copy; 0: no limit")


Outcome = Literal["success", "warning", "failure"]


class SMTPSettings(BaseModel):
    """The mail server email channels send through (the password is never logged)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="", description="Empty: email channels cannot send")
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls (587), tls (implicit, 465) or none (a local relay)"
    )
    username: str = ""
    password: SecretStr = SecretStr("")
    sender: str = Field(default="vbm@localhost", description="The From address")
    ca_file: str | None = Field(default=None, description="PEM of the server's CA; default: the system's")


class ChannelSettings(BaseModel):
    """Where people hear about runs and alerts: an email list, Slack, Teams or any HTTP endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["email", "slack", "teams", "webhook"]
    to: tuple[str, ...] = Field(default=(), description="email: the recipients")
    url: SecretStr = Field(default=SecretStr(""), description="slack, teams, webhook: the URL to POST to")
    secret: SecretStr = Field(
        default=SecretStr(""), description="webhook: HMAC-SHA256 key for the X-VBM-Signature header"
    )
    on: tuple[Outcome, ...] = Field(
        default=("failure", "warning"), min_length=1, description="Which outcomes this channel hears of"
    )
    scope: Literal["all", "jobs"] = Field(
        default="all", description="all: every job and alert; jobs: only jobs that name it (options.notify)"
    )

    @model_validator(mode="after")
    def _complete(self) -> ChannelSettings:
        if self.type == "email":
            if not self.to:
                raise ValueError(
                    f"notification channel {self.name!r}: an email channel needs `to` (addresses)"
                )
            bad = [a for a in self.to if "@" not in a or any(c.isspace() for c in a)]
            if bad:
                raise ValueError(
                    f"notification channel {self.name!r}: not an email address: {', '.join(bad)}"
                )
        else:
            url = self.url.get_secret_value()
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"notification channel {self.name!r}: a {self.type} channel needs `url` (http:// or https://)"
                )
        return self


class NotificationSettings(BaseModel):
    """Channels that are told when runs end and alerts are raised (notifier service)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    smtp: SMTPSettings = SMTPSettings()
    channels: tuple[ChannelSettings, ...] = ()
    timeout: float = Field(default=15, gt=0, le=300, description="Seconds one delivery may take")
    retry: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        default=(10, 60, 300, 900, 1800, 3600),
        min_length=1,
        max_length=20,
        description="Seconds before each retry of a failed delivery; then it is given up (an alert)",
    )
    public_url: str = Field(
        default="", description="The gateway's address as people reach it, for links in messages"
    )

    @model_validator(mode="after")
    def _unique(self) -> NotificationSettings:
        names = [c.name for c in self.channels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"notifications.channels: names must be unique, repeated: {', '.join(duplicates)}"
            )
        if any(c.type == "email" for c in self.channels) and not self.smtp.host:
            raise ValueError(
                "notifications: an email channel is configured but notifications.smtp.host is not"
            )
        return self

    def channel(self, name: str) -> ChannelSettings | None:
        return next((c for c in self.channels if c.name == name), None)


class HotAddSettings(BaseModel):
    """Hot-add: how a disk attached to vbm's own VM is found in this machine's /dev."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_dir: Path = Field(
        default=Path("/dev/disk/by-id"),
        description="Where udev links a disk by its WWN (wwn-0x<vSphere disk UUID>); the proxy VM"
        " needs disk.EnableUUID = TRUE for vSphere to show the UUID",
    )
    settle_seconds: float = Field(
        default=30.0, gt=0, description="How long an attached disk may take to appear"
    )


class InstantSettings(BaseModel):
    """Instant recovery: where restore points are published for vCenter to mount."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path | None = Field(default=None, description="Default: <data_dir>/instant")
    nfs_server: str | None = Field(
        default=None,
        description="The address ESXi mounts root's NFS export from; unset: a local datastore on root",
    )


class Settings(BaseSettings):
    """Everything a vbm process can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="VBM_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(default=Path("var"), description="Where every piece of local state lives")
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means SQLite at <data_dir>/vbm.db"
    )
    repository: str = Field(
        default="",
        description="Default repository location: a path, or s3://host[:port]/bucket[/prefix][?tls=false];"
        " empty means <data_dir>/repo",
    )
    auto_migrate: bool = Field(
        default=True, description="Bring the database schema to the newest revision on start"
    )
    log_level: LogLevel = "INFO"
    heartbeat_interval: float = Field(default=5.0, gt=0, le=300)
    shutdown_grace: float = Field(default=20.0, gt=0, le=600)
    nats: NatsSettings = NatsSettings()
    gateway: GatewaySettings = GatewaySettings()
    lab: LabSettings = LabSettings()
    pipeline: PipelineSettings = PipelineSettings()
    limits: LimitSettings = LimitSettings()
    mover: MoverSettings = MoverSettings()
    verify: VerifySettings = VerifySettings()
    retention: Policy = Field(
        default_factory=lambda: Policy(keep_last=14),
        description="Retention of jobs that set none (shared/model/retention.py rules)",
    )
    instant: InstantSettings = InstantSettings()
    hotadd: HotAddSettings = HotAddSettings()
    s3: S3Settings = S3Settings()
    azure: AzureSettings = AzureSettings()
    replication: ReplicationSettings = ReplicationSettings()
    sftp: SFTPSettings = SFTPSettings()
    rclone: RcloneSettings = RcloneSettings()
    notifications: NotificationSettings = NotificationSettings()

    @property
    def instant_root(self) -> Path:
        return self.instant.root or self.data_dir / "instant"

    vcenters: tuple[VCenterSettings, ...] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file_path()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @model_validator(mode="after")
    def _unique_vcenters(self) -> Settings:
        names = [vc.name for vc in self.vcenters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"vcenters: names must be unique, repeated: {', '.join(duplicates)}")
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vbm.db').resolve()}"

    @property
    def repository_location(self) -> str:
        return self.repository or str((self.data_dir / "repo").resolve())

    def public_dict(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked (safe to print or log)."""
        return self.model_dump(mode="json")


def config_file_path() -> Path | None:
    """The TOML file to read: `VBM_CONFIG` if set (it must exist), else `<data_dir>/vbm.toml`."""
    named = os.environ.get("VBM_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"VBM_CONFIG names {path}, which is not a file: create it or unset it")
        return path
    data_dir = Path(os.environ.get("VBM_DATA_DIR", "var"))
    default = data_dir / "vbm.toml"
    return default if default.is_file() else None


# VBM_ variables that are not settings but are read elsewhere (launchers, tests).
OTHER_VARIABLES = frozenset({"VBM_CONFIG", "VBM_LAB_BIN_DIR", "VBM_TEST_PG_ADMIN_URL"})


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """`VBM_*` variables that configure nothing, usually typos: callers warn about them."""
    env = os.environ if environ is None else environ
    known = {f"VBM_{name.upper()}" for name in Settings.model_fields}
    return sorted(
        key
        for key in env
        if key.startswith("VBM_") and key not in OTHER_VARIABLES and key.split("__")[0] not in known
    )


def runtime_lab_file(data_dir: Path) -> Path:
    """Where a running `vbm up` leaves the connection of the lab it started."""
    return data_dir / "lab" / "vcenter.json"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation errors into one readable ConfigError.

    With no vCenter configured, the lab of a `vbm up` running on the same data directory is used
    (it leaves its connection in `<data_dir>/lab/vcenter.json` while it runs).
    """
    from pydantic import ValidationError

    try:
        settings = Settings(**overrides)
        lab_file = runtime_lab_file(settings.data_dir)
        if not settings.vcenters and lab_file.is_file():
            lab = VCenterSettings.model_validate_json(lab_file.read_text())
            settings = settings.model_copy(update={"vcenters": (lab,)})
        return settings
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(settings)"
            env = "VBM_" + "__".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {where}: {err['msg']} (set by {env} or the config file)")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
    except ValueError as exc:  # e.g. a TOML file that does not parse
        raise ConfigError(f"invalid configuration: {exc}") from None
