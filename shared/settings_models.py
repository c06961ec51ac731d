"""The sections of the settings (`shared.settings.Settings`): one frozen model per section, each
refusing unknown keys. Import them from `shared.settings`, which re-exports every one."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class VCenterSettings(BaseModel):
    """One vCenter (or ESXi host) that jobs can back up from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(description="SDK endpoint, e.g. https://vcsa.example.com/sdk")
    username: str
    password: SecretStr
    verify_tls: bool = True
    ca_file: str | None = None  # PEM of the CA that signed its certificate; default: the system's
    ca_pem: str | None = None  # the same CA given as PEM text (vCenters added through the API)
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


class OtelSettings(BaseModel):
    """OpenTelemetry traces (docs/design.md, "Traces"): exported over OTLP/HTTP when an endpoint is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL, e.g. http://tempo:4318 (spans go to <endpoint>/v1/traces);"
        " unset: no traces (no cost)",
    )
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0, description="Share of new traces kept")

    @field_validator("endpoint")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https:// (OTLP over HTTP, port 4318)")
        return value.rstrip("/")


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


class MountSettings(BaseModel):
    """The NFS/CIFS mount manager (shared/mounts/): the programs it runs and how long it waits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mount_command: str = Field(default="mount", description="The mount(8) program (tests: a stand-in)")
    umount_command: str = Field(default="umount", description="The umount(8) program")
    command_timeout: float = Field(default=60, gt=0, description="Seconds a mount or umount may take")
    stat_timeout: float = Field(
        default=5, gt=0, description="Seconds a stat of a mount point may take before it counts as stale"
    )
    remount_on_start: bool = Field(default=True, description="The gateway mounts the stored shares on start")
    connect_timeout: float = Field(
        default=10, gt=0, description="Seconds each step of a connection test may take (name, port, login)"
    )


class ReplicationSettings(BaseModel):
    """Copies of restore points to secondary repositories (a job's options.replicate_to)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bandwidth_mbps: float = Field(default=0, ge=0, description="Megabits a second per copy; 0: no limit")


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
