"""The gateway's one access check: each route declares the permission it needs with `@needs`,
and the `authorize` middleware (services/gateway/auth.py) lets a request on only when its
identity's role holds that permission (shared/model/access.py). A route without a declaration
is refused with 500 at run time and fails tests/gateway/test_access.py before that."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from shared.model.access import PUBLIC, Permission, Role

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__vbm_permission__"


def needs(permission: Permission | str) -> Callable[[F], F]:
    """Declare what a handler needs: a Permission, or PUBLIC for a route open to anyone."""
    if permission != PUBLIC and not isinstance(permission, Permission):
        raise TypeError(f"needs({permission!r}): a Permission or PUBLIC")

    def mark(handler: F) -> F:
        setattr(handler, _ATTRIBUTE, permission)
        return handler

    return mark


def declared(handler: object) -> Permission | str | None:
    """What a handler declared with `@needs`, or None."""
    return getattr(handler, _ATTRIBUTE, None)


@dataclass(frozen=True)
class Identity:
    """Who is calling: a user through a browser session or one of their API keys."""

    user: str  # the user's name
    role: Role  # for a key: the key's role (at most its owner's)
    via: str  # "session" or "key"
    key_id: str | None = None
    session_id: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names the caller: `alice` or `alice (key 0123abcd...)`."""
        return self.user if self.key_id is None else f"{self.user} (key {self.key_id})"


IDENTITY = web.RequestKey("identity", Identity)


def identity_of(request: web.Request) -> Identity | None:
    return request.get(IDENTITY)
