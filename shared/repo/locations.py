"""Where a repository lives: a location string names its backend.

- a path (`/srv/vbm/repo`, an NFS mount): `LocalBackend`;
- `s3://<host[:port]>/<bucket>[/<prefix>][?tls=false&region=r]`: `S3Backend`, with the
  process's S3 credentials (`configure`, called by `load_settings` from `s3.access_key` and
  `s3.secret_key`).
"""

from __future__ import annotations

from shared.repo.backend import Backend
from shared.repo.errors import RepoError
from shared.repo.local import LocalBackend

_s3: tuple[str, str] | None = None


def configure(s3_access_key: str, s3_secret_key: str) -> None:
    """The credentials S3 locations are opened with (empty: none configured)."""
    global _s3
    _s3 = (s3_access_key, s3_secret_key) if s3_access_key else None


def open_backend(location: str) -> Backend:
    """The backend for `location`; RepoError (what to set) when it cannot be used."""
    if location.startswith("s3://"):
        if _s3 is None:
            raise RepoError(
                f"repository {location} is on S3, and no S3 credentials are configured:"
                " set VBM_S3__ACCESS_KEY and VBM_S3__SECRET_KEY"
            )
        from shared.repo.s3 import S3Backend

        try:
            return S3Backend(location, *_s3)
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise RepoError(f"repository {location}: {scheme}:// is not a supported location (a path, or s3://)")
    return LocalBackend(location)
