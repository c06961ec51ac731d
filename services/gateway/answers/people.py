"""Answers of /api/v1/session, /setup, /users and /keys (services/gateway/api_people.py).

Secrets are write-only: a user's password is only said to be "set" or "not set", a key's secret
never appears, but for the one answer that makes it (POST /api/v1/keys: `key`, shown once) and
the CSRF token a browser's session needs for its changes (login, setup, GET /api/v1/session)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from shared.model.access import Role

SetOrNot = Literal["set", "not set"]


class UserAnswer(BaseModel):
    """A user (shared/catalog/users.py: UserInfo.public)."""

    name: str
    display_name: str
    role: Role
    enabled: bool
    password: SetOrNot = Field(description="whether the user has a password (never the password)")
    locked_until: datetime | None = Field(description="failed logins make the account wait until then")
    last_login_at: datetime | None
    created_at: datetime


class UserList(BaseModel):
    users: list[UserAnswer]
    total: int


class SessionAnswer(BaseModel):
    """A browser's session, just started (login, setup, a new password through a session)."""

    user: UserAnswer
    csrf_token: str = Field(description="send it as X-CSRF-Token with every change of this session")
    expires_at: datetime = Field(description="the session ends then, however busy")
    idle_expires_at: datetime = Field(description="the session ends then unless used before")


class WhoAmI(BaseModel):
    """The caller: the session's fields when it came with one, the key's id when with a key."""

    user: UserAnswer
    via: Literal["session", "key"] = Field(description="how the caller is known")
    role: Role = Field(description="what this request may do (a key's role is at most its owner's)")
    key_id: str | None = Field(None, description="the API key's id (via key)")
    csrf_token: str | None = Field(None, description="via session: send it as X-CSRF-Token")
    expires_at: datetime | None = None
    idle_expires_at: datetime | None = None


class PasswordChanged(BaseModel):
    """Through a session: a fresh session (the new password ended every other); with a key: the user."""

    user: UserAnswer
    csrf_token: str | None = Field(None, description="via session: the new session's CSRF token")
    expires_at: datetime | None = None
    idle_expires_at: datetime | None = None


class KeyAnswer(BaseModel):
    """An API key, never its secret (shared/catalog/apikeys.py: KeyInfo.public)."""

    id: str
    name: str
    owner: str
    role: Role = Field(description="at most its owner's role, which also bounds what it may do")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="written at most once a minute")
    revoked_at: datetime | None


class NewKeyAnswer(KeyAnswer):
    """A new key, with the whole key: shown once, never again."""

    key: str = Field(description="the X-API-Key value (vbm_<id>_<secret>): store it now")


class KeyList(BaseModel):
    keys: list[KeyAnswer]
    total: int
