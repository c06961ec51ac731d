"""Tables of the objects managed through the API that hold credentials (docs/design.md,
"Secrets"): repository locations, the SMTP login and notification channels. Every secret column
holds a Fernet token (shared/vault.py), never plain text; the columns are registered for
`vbm secrets rotate` in shared/catalog/secrets.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, JSONType, ts


class LocationRow(Base):
    """A repository location and the credentials it is opened with: `fields` holds what is not
    secret (the S3 access key id, SFTP known_hosts lines), `secrets` one Fernet token of a JSON
    object of the secret ones (S3 secret key, Azure account key, SFTP private key or password,
    rclone config)."""

    __tablename__ = "locations"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(1024), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # local, s3, azure, sftp, rclone
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    secrets: Mapped[str | None] = mapped_column(Text, nullable=True)  # a Fernet token
    created_at: Mapped[datetime] = ts()
    updated_at: Mapped[datetime] = ts()


class SMTPRow(Base):
    """The mail server email channels send through (one row, id 1); the password encrypted."""

    __tablename__ = "smtp"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    security: Mapped[str] = mapped_column(String(16))
    username: Mapped[str] = mapped_column(String(255), default="")
    password: Mapped[str | None] = mapped_column(Text, nullable=True)  # a Fernet token
    sender: Mapped[str] = mapped_column(String(255))
    ca_file: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    updated_at: Mapped[datetime] = ts()


class ChannelRow(Base):
    """A notification channel; its URL (which may embed a token), HMAC key and bot token encrypted."""

    __tablename__ = "channels"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    to: Mapped[list[str]] = mapped_column(JSONType, default=list)
    on: Mapped[list[str]] = mapped_column(JSONType, default=list)
    scope: Mapped[str] = mapped_column(String(16), default="all")
    url: Mapped[str | None] = mapped_column(Text, nullable=True)  # a Fernet token
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)  # a Fernet token
    token: Mapped[str | None] = mapped_column(Text, nullable=True)  # a Fernet token (telegram)
    options: Mapped[dict[str, str] | None] = mapped_column(JSONType, nullable=True)  # of its type
    level: Mapped[str | None] = mapped_column(String(16), nullable=True)  # None: info
    created_at: Mapped[datetime] = ts()
    updated_at: Mapped[datetime] = ts()


class MountRow(Base):
    """An NFS or CIFS share vbm mounts at `<data_dir>/mounts/<name>` (shared/mounts/): `fields`
    holds what is not secret (server, export or share, version, options, user name, domain),
    `secrets` one Fernet token of a JSON object holding the CIFS password."""

    __tablename__ = "mounts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # nfs, cifs
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    secrets: Mapped[str | None] = mapped_column(Text, nullable=True)  # a Fernet token
    created_at: Mapped[datetime] = ts()
    updated_at: Mapped[datetime] = ts()
