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
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from shared.model.retention import Policy
from shared.settings_access import (
    AuditSettings,
    ConfigBackupSettings,
    GatewaySettings,
    MetricsSettings,
    SecuritySettings,
)
from shared.settings_models import (
    AzureSettings,
    HotAddSettings,
    InstantSettings,
    LabSettings,
    LimitSettings,
    LogLevel,
    MountSettings,
    MoverSettings,
    NatsSettings,
    OtelSettings,
    PipelineSettings,
    RcloneSettings,
    ReplicationSettings,
    S3Settings,
    SFTPSettings,
    VCenterSettings,
    VerifySettings,
)
from shared.settings_notify import ChannelSettings, NotificationSettings, Outcome, SMTPSettings

# the sections are re-exported: `from shared.settings import S3Settings` as before
__all__ = [
    "OTHER_VARIABLES",
    "AuditSettings",
    "AzureSettings",
    "ChannelSettings",
    "ConfigBackupSettings",
    "ConfigError",
    "GatewaySettings",
    "HotAddSettings",
    "InstantSettings",
    "LabSettings",
    "LimitSettings",
    "LogLevel",
    "MetricsSettings",
    "MountSettings",
    "MoverSettings",
    "NatsSettings",
    "NotificationSettings",
    "OtelSettings",
    "Outcome",
    "PipelineSettings",
    "RcloneSettings",
    "ReplicationSettings",
    "S3Settings",
    "SFTPSettings",
    "SMTPSettings",
    "SecuritySettings",
    "Settings",
    "VCenterSettings",
    "VerifySettings",
    "config_file_path",
    "load_settings",
    "runtime_lab_file",
    "unknown_variables",
]


class ConfigError(Exception):
    """A setting is wrong; the message says which and what to do."""


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
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) that encrypt stored secrets, comma-separated: the first encrypts,"
        " all decrypt; unset: the key file <data_dir>/secret.key (made on first use)",
    )
    auto_migrate: bool = Field(
        default=True, description="Bring the database schema to the newest revision on start"
    )
    log_level: LogLevel = "INFO"
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="json (one object a line) or text; unset: text on a terminal, json otherwise",
    )
    heartbeat_interval: float = Field(default=5.0, gt=0, le=300)
    shutdown_grace: float = Field(default=20.0, gt=0, le=600)
    nats: NatsSettings = NatsSettings()
    otel: OtelSettings = OtelSettings()
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
    security: SecuritySettings = SecuritySettings()
    config_backup: ConfigBackupSettings = ConfigBackupSettings()
    audit: AuditSettings = AuditSettings()
    metrics: MetricsSettings = MetricsSettings()
    mounts: MountSettings = MountSettings()

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
