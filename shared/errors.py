"""The errors of vbm's stores, each with the HTTP status the API answers it with.

They live here, below every store and the API, so that raising one needs no store imported (this
broke the cycle model.jobs -> catalog.restores -> catalog.jobs -> model.jobs).
"""

from __future__ import annotations


class StoreError(Exception):
    status = 400
    title = "Bad Request"


class NotFound(StoreError):
    status, title = 404, "Not Found"


class Conflict(StoreError):
    status, title = 409, "Conflict"


class PreconditionFailed(StoreError):
    """A conditional change (If-Match) was made from a version that is no longer current."""

    status, title = 412, "Precondition Failed"


class Invalid(StoreError):
    """A value is wrong; the message starts with the field's path (e.g. `vms.0.name: ...`)."""

    status, title = 422, "Unprocessable Entity"

    def __init__(self, field: str, message: str, where: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message
        self.where = where  # "body", "query", "path" or "header"; None: the API finds out


class Unreachable(StoreError):
    """A vCenter could not be asked (down, refused the login, answered nonsense)."""

    status, title = 502, "Bad Gateway"
