"""Answers and bodies of /api/v1/mounts (services/gateway/api_mounts.py): NFS and CIFS shares
vbm mounts under its data directory; the CIFS password is write-only ("set" or "not set")."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.answers.settings import SetOrNot

State = Literal["mounted", "unmounted", "stale"]


class MountBody(BaseModel):
    """A share (PUT: only the fields to change; the password left out is kept)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="required by POST; PUT cannot change it")
    kind: Literal["nfs", "cifs"] | None = Field(None, description="required by POST; PUT cannot change it")
    server: str | None = Field(None, description="host name or IP address")
    export: str | None = Field(None, description="nfs: the exported path, e.g. /srv/backup")
    share: str | None = Field(None, description="cifs: the share's name")
    version: str | None = Field(
        None, description="nfs: 3, 4, 4.0, 4.1 (default), 4.2; cifs: 2.0 to 3.1.1 (3.0)"
    )
    options: str | None = Field(None, description="more mount options, comma-separated (e.g. hard,port=2049)")
    username: str | None = Field(None, description="cifs: the login (none: guest)")
    domain: str | None = Field(None, description="cifs: the login's domain")
    password: str | None = Field(None, description="cifs: write-only, stored encrypted")


class MountAnswer(BaseModel):
    """A share (shared/catalog/mounts.py: row_view), its state now, never its password."""

    name: str
    kind: Literal["nfs", "cifs"]
    server: str
    export: str | None
    share: str | None
    version: str
    options: str
    username: str | None
    domain: str | None
    password: SetOrNot
    mount_point: str = Field(description="<data_dir>/mounts/<name>")
    command: str = Field(description="the mount command line vbm runs (no secret: CIFS logins go in a file)")
    state: State = Field(description="stale: listed as mounted, but a stat fails or does not answer in time")
    state_detail: str
    created_at: datetime
    updated_at: datetime
    error: str | None = None


class MountList(BaseModel):
    mounts: list[MountAnswer]
    total: int


class MountOutcome(BaseModel):
    """What a mount or unmount did (shared/mounts/manager.py)."""

    ok: bool
    state: State
    message: str
    command: str = Field(description="the command line run, empty when none ran")


class MountSaved(MountAnswer):
    mount: MountOutcome | None = Field(description="null when saved without mounting (mount=false)")


class MountDone(MountOutcome):
    name: str


class MountTested(BaseModel):
    """A connection test without mounting (shared/mounts/connect.py)."""

    name: str
    ok: bool
    step: Literal["ok", "dns", "tcp", "auth", "share", "write", "client"] = Field(
        description="the step that failed: dns, tcp, auth (login refused), share (not found), write"
    )
    message: str
