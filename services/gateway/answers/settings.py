"""Answers (and the bodies not modelled elsewhere) of /api/v1/vcenters, /locations, /smtp and
/channels (services/gateway/api_vcenters.py, api_settings.py).

Secrets are write-only: a password, key, channel URL or HMAC key is only said to be "set" or
"not set". Configured objects (`"source": "env"`) have no times; an object whose secret cannot be
decrypted is still listed, with `error` saying why."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.settings_notify import ChannelType, Level, Outcome

SetOrNot = Literal["set", "not set"]
Source = Literal["env", "api"]
ERROR = Field(None, description="why this object cannot be used now (its secret cannot be decrypted)")


class Deleted(BaseModel):
    deleted: str = Field(description="the name of what was removed")


class _Stored(BaseModel):
    source: Source = Field(description="env: configured, read only here; api: stored through the API or vbm")
    created_at: datetime | None = Field(description="null when configured")
    updated_at: datetime | None = Field(description="null when configured")
    error: str | None = ERROR


class VCenterAnswer(_Stored):
    """A vCenter (shared/catalog/vcenters.py: row_view), never its password."""

    name: str
    url: str
    username: str
    password: SetOrNot
    verify_tls: bool
    ca_pem: str | None
    ca_file: str | None
    hotadd_proxy: str | None


class VCenterList(BaseModel):
    vcenters: list[VCenterAnswer]
    total: int


class ConnectionTest(BaseModel):
    """A vCenter's connection test (shared/vsphere/probe.py): which step failed and the field to change."""

    ok: bool | None = Field(description="null when the test was skipped (skip_test)")
    kind: str = Field(description="ok, or the step that failed: dns, tcp, tls, not_vcenter, credentials;"
                      " skipped")  # fmt: skip
    message: str
    field: str | None = None
    server: str | None = Field(None, description="what the server says it is, when the login worked")
    thumbprint_sha256: str | None = Field(
        None,
        description="https: the SHA-256 thumbprint of the server's certificate (AA:BB:...), also when it"
        " was not trusted: compare it with the vCenter's",
    )
    thumbprint_sha1: str | None = Field(None, description="https: the same certificate's SHA-1 thumbprint")


class VCenterSaved(VCenterAnswer):
    test: ConnectionTest


class VCenterTested(ConnectionTest):
    name: str


class LocationAnswer(_Stored):
    """A repository location (shared/catalog/locations.py): its kind's plain fields, its secrets
    as "set" or "not set"."""

    name: str
    url: str
    kind: Literal["local", "s3", "azure", "sftp", "rclone"]
    access_key: str | None = Field(None, description="s3: the access key id (not secret)")
    known_hosts: str | None = Field(None, description="sftp: the server's known_hosts lines")
    secret_key: SetOrNot | None = Field(None, description="s3")
    account_key: SetOrNot | None = Field(None, description="azure")
    private_key: SetOrNot | None = Field(None, description="sftp")
    password: SetOrNot | None = Field(None, description="sftp")
    config: SetOrNot | None = Field(None, description="rclone: the rclone.conf text")


class LocationList(BaseModel):
    locations: list[LocationAnswer]
    total: int


class OpenTest(BaseModel):
    ok: bool | None = Field(description="null when the test was skipped (skip_test)")
    message: str


class LocationSaved(LocationAnswer):
    test: OpenTest


class LocationBody(BaseModel):
    """A location: its URL and the credentials of its kind (PUT: only the fields to change; a
    secret left out is kept)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="required by POST; PUT cannot change it")
    url: str | None = Field(
        None, description="a path, s3://, azure://, sftp:// or rclone://; required by POST"
    )
    access_key: str | None = None
    secret_key: str | None = None
    account_key: str | None = None
    known_hosts: str | None = None
    private_key: str | None = None
    password: str | None = None
    config: str | None = None


class SmtpAnswer(BaseModel):
    """The SMTP server in effect (shared/catalog/smtp.py: view), never its password."""

    host: str
    port: int
    security: Literal["starttls", "tls", "none"]
    username: str
    password: SetOrNot
    sender: str
    ca_file: str | None
    source: Source
    updated_at: datetime | None
    error: str | None = ERROR


class ChannelAnswer(_Stored):
    """A notification channel (shared/catalog/channels.py): the URL's host only, never its path,
    key or bot token."""

    name: str
    type: ChannelType
    on: list[Outcome]
    level: Level = Field(description="the lowest level it hears of: info < warning < critical")
    scope: Literal["all", "jobs"]
    to: list[str]
    url: SetOrNot
    secret: SetOrNot = Field(description="webhook: the HMAC key")
    token: SetOrNot = Field(description="telegram: the bot token")
    chat_id: str | None = Field(None, description="telegram: the chat it posts to")
    api_url: str | None = Field(None, description="telegram: the Bot API server")
    sendmail: str | None = Field(None, description="sendmail: the program it runs")
    endpoint: str | None = Field(
        None, description="where it sends: the URL's host, the SMTP server, the Bot API's host or the program"
    )
    signed: bool | None = Field(None, description="webhook: whether posts carry X-VBM-Signature")


class ChannelList(BaseModel):
    channels: list[ChannelAnswer]
    total: int


class ChannelChange(BaseModel):
    """PUT: the fields to change (secrets left out are kept)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="cannot be changed: the channel's own name, or left out")
    type: ChannelType | None = None
    to: list[str] | None = Field(None, description="email, sendmail: the recipients")
    url: str | None = Field(None, description="slack, teams, webhook: the URL to POST to")
    secret: str | None = Field(None, description="webhook: HMAC-SHA256 key for the X-VBM-Signature header")
    token: str | None = Field(None, description="telegram: the bot token")
    chat_id: str | None = Field(None, description="telegram: the chat (a number or @channelname)")
    api_url: str | None = Field(None, description="telegram: the Bot API server")
    sendmail: str | None = Field(None, description="sendmail: the program's absolute path")
    on: list[Outcome] | None = None
    level: Level | None = None
    scope: Literal["all", "jobs"] | None = None
