"""Users: who may log in, with which role (docs/design.md, "Access").

Passwords are hashed with argon2id (argon2-cffi, OWASP's parameters: 19 MiB, 2 passes); a user
without a hash cannot log in. Failed logins in a row make the account wait, the wait doubling
with every further failure (SecuritySettings). The last enabled admin can be neither disabled
nor demoted: someone must always be able to administer vbm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.clock import iso
from shared.db.models import ApiKey
from shared.db.users import User, WebSession
from shared.errors import Conflict, Invalid, NotFound
from shared.model.access import Role, parse_role
from shared.settings_access import SecuritySettings

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")
MAX_PASSWORD = 256  # argon2 takes any length; a bound keeps a login from costing a lot
MAX_WAIT = timedelta(minutes=15)

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_DUMMY = _hasher.hash("vbm: compared against when the user is unknown, so timing does not tell")


@dataclass(frozen=True)
class UserInfo:
    name: str
    display_name: str
    role: Role
    enabled: bool
    has_password: bool
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime

    def public(self) -> dict[str, object]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "role": self.role.value,
            "enabled": self.enabled,
            "password": "set" if self.has_password else "not set",
            "locked_until": iso(self.locked_until),
            "last_login_at": iso(self.last_login_at),
            "created_at": iso(self.created_at),
        }


def info(row: User) -> UserInfo:
    return UserInfo(
        row.name,
        row.display_name,
        Role(row.role),
        row.enabled,
        row.password_hash is not None,
        row.locked_until,
        row.last_login_at,
        row.created_at,
    )


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise Invalid(
            "name", f"{name!r}: 1-64 lower-case letters, digits, _ . @ - (starting with a letter or digit)"
        )
    return name


def check_password(password: str, name: str, rules: SecuritySettings) -> None:
    """Invalid naming the rule a new password breaks."""
    if len(password) < rules.password_min_length:
        raise Invalid("password", f"must be at least {rules.password_min_length} characters long")
    if len(password) > MAX_PASSWORD:
        raise Invalid("password", f"must be at most {MAX_PASSWORD} characters long")
    if password.strip() != password or not password.strip():
        raise Invalid("password", "must not begin or end with white space")
    if password.lower() == name.lower() or len(set(password)) < 4:
        raise Invalid(
            "password", "is too easy to guess (the user's name, or fewer than 4 different characters)"
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def get(session: Session, name: str) -> User:
    row = session.get(User, name)
    if row is None:
        raise NotFound(f"no user named {name!r} (see `vbm user list`)")
    return row


def list_users(session: Session) -> list[UserInfo]:
    return [info(r) for r in session.scalars(select(User).order_by(User.name))]


def any_exist(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(User)))


def add(
    session: Session,
    name: str,
    role: Role | str,
    now: datetime,
    rules: SecuritySettings,
    password: str | None = None,
    display_name: str = "",
) -> UserInfo:
    check_name(name)
    role = role if isinstance(role, Role) else _role(role)
    if len(display_name) > 128:
        raise Invalid("display_name", "must be at most 128 characters long")
    if session.get(User, name) is not None:
        raise Conflict(f"a user named {name!r} exists already")
    if password is not None:
        check_password(password, name, rules)
    row = User(
        name=name,
        display_name=display_name,
        role=role.value,
        enabled=True,
        password_hash=hash_password(password) if password is not None else None,
        failed_logins=0,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return info(row)


def _role(text: str) -> Role:
    try:
        return parse_role(text)
    except ValueError as exc:
        raise Invalid("role", str(exc)) from None


def _enabled_admins(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN.value, User.enabled.is_(True))
        )
        or 0
    )


def change(
    session: Session,
    name: str,
    now: datetime,
    *,
    role: Role | str | None = None,
    enabled: bool | None = None,
    display_name: str | None = None,
) -> UserInfo:
    """Change a user's role, state or display name. Disabling ends the user's sessions; a lower
    role lowers what their keys carry at once (a key never carries more than its owner)."""
    row = get(session, name)
    new_role = None if role is None else role if isinstance(role, Role) else _role(role)
    losing_admin = (
        row.role == Role.ADMIN.value
        and row.enabled
        and ((new_role is not None and new_role != Role.ADMIN) or enabled is False)
    )
    if losing_admin and _enabled_admins(session) <= 1:
        raise Conflict(f"{name!r} is the last enabled admin: make another admin first")
    if new_role is not None:
        row.role = new_role.value
    if display_name is not None:
        if len(display_name) > 128:
            raise Invalid("display_name", "must be at most 128 characters long")
        row.display_name = display_name
    if enabled is not None:
        row.enabled = enabled
        if not enabled:
            end_sessions(session, name, now)
        else:
            row.failed_logins, row.locked_until = 0, None
    row.updated_at = now
    session.flush()
    return info(row)


def set_password(
    session: Session, name: str, password: str, now: datetime, rules: SecuritySettings
) -> UserInfo:
    """A new password ends every session of the user (whoever had the old one is logged out)."""
    row = get(session, name)
    check_password(password, name, rules)
    row.password_hash = hash_password(password)
    row.failed_logins, row.locked_until, row.updated_at = 0, None, now
    end_sessions(session, name, now)
    return info(row)


def end_sessions(session: Session, name: str, now: datetime) -> None:
    session.execute(
        update(WebSession).where(WebSession.user == name, WebSession.ended_at.is_(None)).values(ended_at=now)
    )


class LoginRefused(Exception):
    """Why a login failed: `public` is what the caller may be told, `reason` what the audit log
    records; `retry_after` (seconds) when the account waits."""

    def __init__(self, public: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.public, self.reason, self.retry_after = public, reason, retry_after


WRONG = "wrong user name or password"


def authenticate(
    session: Session, name: str, password: str, now: datetime, rules: SecuritySettings
) -> UserInfo:
    """The user when `password` is theirs; LoginRefused otherwise (the same words for an unknown
    user, a wrong password and a disabled account, and the same time spent hashing)."""
    row = session.get(User, name) if NAME_PATTERN.match(name) else None
    if row is not None and row.locked_until is not None and row.locked_until > now:
        wait = (row.locked_until - now).total_seconds()
        raise LoginRefused(
            f"too many failed logins: try again in {int(wait) + 1} s", f"{name}: locked", retry_after=wait
        )
    good = _verify(row.password_hash if row is not None and row.password_hash else _DUMMY, password)
    if row is None:
        raise LoginRefused(WRONG, f"{name!r}: no such user")
    if not good or row.password_hash is None:
        row.failed_logins += 1
        over = row.failed_logins - rules.lockout_after
        if over >= 0:
            pause = min(MAX_WAIT, timedelta(seconds=rules.lockout_seconds * 2 ** min(over, 20)))
            row.locked_until = now + pause
        raise LoginRefused(WRONG, f"{name}: wrong password ({row.failed_logins} in a row)")
    if not row.enabled:
        raise LoginRefused(WRONG, f"{name}: the account is disabled")
    row.failed_logins, row.locked_until, row.last_login_at = 0, None, now
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = hash_password(password)
    return info(row)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return False


def keys_of(session: Session, name: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.owner == name).order_by(ApiKey.created_at)))
