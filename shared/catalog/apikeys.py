"""API keys: what a REST client shows in `X-API-Key`.

A key reads `vbm_<id>_<secret>`. It belongs to a user and carries a role, at most its owner's
(an operator cannot mint an admin key); what a request with it may do is the lower of the key's
role and its owner's role now, and nothing when the owner is disabled or the key expired.

Only the SHA-256 of the secret is stored; the whole key is shown once, when it is created (`vbm
apikey create NAME`). Verification looks the row up by id and compares digests in constant time;
`last_used_at` is written at most once a minute per key so a busy client does not turn every
request into a database write.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from shared.clock import iso
from shared.db.models import ApiKey
from shared.db.users import User
from shared.model.access import Role

PREFIX = "vbm"
HEADER = "X-API-Key"
TOUCH_EVERY = timedelta(seconds=60)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_KEY = re.compile(r"^vbm_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")
_NOBODY = "0" * 64  # compared against when the id is unknown, so timing does not tell


class ApiKeyError(Exception):
    """A key cannot be created or revoked; the message says why."""


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    owner: str = ""
    role: Role = Role.VIEWER
    expires_at: datetime | None = None

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "role": self.role.value,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        row.id,
        row.name,
        row.created_at,
        row.last_used_at,
        row.revoked_at,
        row.owner,
        Role(row.role),
        row.expires_at,
    )


def default_owner(session: Session, now: datetime) -> User:
    """Whom a key made without naming its owner belongs to: the first enabled admin, or a new
    user `admin` without a password when there is none (as revision 0011 made for old keys)."""
    row = session.scalar(
        select(User)
        .where(User.role == Role.ADMIN.value, User.enabled.is_(True))
        .order_by(User.created_at, User.name)
    )
    if row is not None:
        return row
    if session.get(User, "admin") is not None:
        raise ApiKeyError("no enabled admin exists to own the key: name its owner (--user NAME)")
    row = User(
        name="admin",
        display_name="",
        role=Role.ADMIN.value,
        enabled=True,
        password_hash=None,
        failed_logins=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def create(
    session: Session,
    name: str,
    now: datetime,
    *,
    owner: str | None = None,
    role: Role | None = None,
    expires_at: datetime | None = None,
) -> tuple[KeyInfo, str]:
    """Add a key named `name` for `owner` (default: `default_owner`) carrying `role` (default and
    at most the owner's); returns it and the full key text (shown once, never stored)."""
    if not NAME_PATTERN.match(name):
        raise ApiKeyError(f"key name {name!r} must be 1-128 letters, digits, _ . @ - (starting alnum)")
    if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"an API key named {name!r} exists already (revoke it or pick another name)")
    user = default_owner(session, now) if owner is None else session.get(User, owner)
    if user is None:
        raise ApiKeyError(f"no user named {owner!r} to own the key (see `vbm user list`)")
    if not user.enabled:
        raise ApiKeyError(f"user {user.name!r} is disabled: a key of theirs could do nothing")
    have = Role(user.role)
    role = role or have
    if not have.covers(role):
        raise ApiKeyError(f"a key of {user.name!r} ({have.value}) cannot carry the role {role.value}")
    if expires_at is not None and expires_at <= now:
        raise ApiKeyError("the key would have expired already: give an expiry in the future")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id,
        name=name,
        secret_sha256=_digest(secret),
        created_at=now,
        owner=user.name,
        role=role.value,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return _info(row), f"{PREFIX}_{key_id}_{secret}"


def verify(
    session: Session, presented: str | None, now: datetime | None = None
) -> tuple[KeyInfo | None, str]:
    """Check a presented key (reads only): (the key, "") when good, else (None, why refused).
    The key's role in the answer is what it may do now: the lower of its own and its owner's."""
    if not presented:
        return None, f"missing {HEADER} header"
    match = _KEY.match(presented.strip())
    row = session.get(ApiKey, match.group(1)) if match else None
    wanted = row.secret_sha256 if row is not None else _NOBODY
    given = _digest(match.group(2)) if match else _digest(presented)
    if not hmac.compare_digest(wanted, given) or row is None:
        return None, f"invalid {HEADER}"
    if row.revoked_at is not None:
        return None, f"{HEADER} {row.name!r} was revoked"
    if now is not None and row.expires_at is not None and row.expires_at <= now:
        return None, f"{HEADER} {row.name!r} expired at {row.expires_at.isoformat()}"
    user = session.get(User, row.owner)
    if user is None or not user.enabled:
        return None, f"{HEADER} {row.name!r} belongs to a disabled user"
    key = _info(row)
    owner_role = Role(user.role)
    if not owner_role.covers(key.role):
        key = KeyInfo(**{**key.__dict__, "role": owner_role})
    return key, ""


def needs_touch(key: KeyInfo, now: datetime) -> bool:
    """Whether `last_used_at` is old enough to be written again (at most once a minute)."""
    last = key.last_used_at
    if last is None:
        return True
    if last.tzinfo is None:  # a naive timestamp from SQLite was written in UTC
        last = last.replace(tzinfo=UTC)
    return now - last >= TOUCH_EVERY


def touch(session: Session, key_id: str, now: datetime) -> None:
    """Record a use; conditional, so racing requests write once and never move it backwards."""
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - TOUCH_EVERY))
        .values(last_used_at=now)
    )


def list_keys(session: Session, owner: str | None = None) -> list[KeyInfo]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.name)
    if owner is not None:
        query = query.where(ApiKey.owner == owner)
    return [_info(r) for r in session.scalars(query)]


def revoke(session: Session, name: str, now: datetime, owner: str | None = None) -> KeyInfo:
    """Revoke the key named `name` (or whose id is `name`), of `owner` only when given."""
    row = session.scalar(select(ApiKey).where(or_(ApiKey.name == name, ApiKey.id == name)))
    if row is None or (owner is not None and row.owner != owner):
        raise ApiKeyError(f"no API key named {name!r} (see `vbm apikey list`)")
    if row.revoked_at is None:
        row.revoked_at = now
    return _info(row)


def any_exist(session: Session) -> bool:
    """Whether any key was ever created (revoked ones count): then the API always needs one."""
    return bool(session.scalar(select(exists().where(ApiKey.id.is_not(None)))))
