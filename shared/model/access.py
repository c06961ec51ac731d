"""Who may do what: the three roles and the permissions they hold (docs/design.md, "Access").

This is the one place that decides access. Every gateway route declares the one permission it
needs (`services.gateway.access.needs`); a role holds a fixed set of permissions; nothing else
(no per-route role lists, no checks in handlers) decides whether a request may go on.

- viewer: every `*:read` permission, never a secret (no answer carries one anyway).
- operator: what a viewer has, and runs, cancels, verifies, restores, acknowledges alerts and
  manages its own API keys. It cannot create, change or delete jobs, schedules, retention,
  settings, vCenters or users.
- admin: everything.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def covers(self, other: Role) -> bool:
        """Whether this role holds every permission of `other` (a key may carry at most its
        owner's role)."""
        return self.rank >= other.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class Permission(StrEnum):
    # read: viewer and up
    STATUS_READ = "status:read"
    JOBS_READ = "jobs:read"
    RUNS_READ = "runs:read"
    BACKUPS_READ = "backups:read"
    RESTORES_READ = "restores:read"
    REPORTS_READ = "reports:read"
    REPOSITORIES_READ = "repositories:read"
    ALERTS_READ = "alerts:read"
    NOTIFICATIONS_READ = "notifications:read"  # channels and the SMTP server, never their secrets
    VMS_READ = "vms:read"
    VCENTERS_READ = "vcenters:read"
    PRUNE_READ = "prune:read"
    AUDIT_READ = "audit:read"
    METRICS_READ = "metrics:read"  # Prometheus' scrape of /metrics (a viewer key for Prometheus)
    SELF = "self"  # one's own account: who am I, log out, change one's password, one's own keys
    # operate: operator and up
    JOBS_RUN = "jobs:run"
    BACKUPS_VERIFY = "backups:verify"
    RESTORES_RUN = "restores:run"  # includes reading a disk image out of the repository
    ALERTS_ACK = "alerts:ack"
    REPOSITORIES_MEASURE = "repositories:measure"
    # administer: admin only
    JOBS_WRITE = "jobs:write"
    BACKUPS_PIN = "backups:pin"
    PRUNE_RUN = "prune:run"
    NOTIFICATIONS_WRITE = "notifications:write"
    VCENTERS_WRITE = "vcenters:write"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    KEYS_ADMIN = "keys:admin"  # every user's API keys
    SETTINGS_WRITE = "settings:write"  # secrets, repository locations, channels, configuration


# A route anyone may call, identified or not (health, login, the one-time setup).
PUBLIC = "public"

_VIEWER = frozenset(p for p in Permission if p.value.endswith(":read") and p not in {Permission.USERS_READ})
_VIEWER |= {Permission.SELF}
_OPERATOR = _VIEWER | {
    Permission.JOBS_RUN,
    Permission.BACKUPS_VERIFY,
    Permission.RESTORES_RUN,
    Permission.ALERTS_ACK,
    Permission.REPOSITORIES_MEASURE,
}
_ADMIN = frozenset(Permission)

GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset(_VIEWER),
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADMIN: _ADMIN,
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in GRANTS[role]


def parse_role(text: str) -> Role:
    """A role from its name; ValueError naming the three when it is none of them."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise ValueError(f"unknown role {text!r}: one of {', '.join(r.value for r in Role)}") from None
