"""Where a repository lives: a location string names its backend.

- a path (`/srv/vbm/repo`, an NFS mount): `LocalBackend`;
- `s3://<host[:port]>/<bucket>[/<prefix>][?tls=false&region=r]`: `S3Backend`, with the
  process's S3 credentials (`configure`, called by `load_settings` from `s3.access_key` and
  `s3.secret_key`);
- `azure://<account>/<container>[/<prefix>][?endpoint=<account URL>]`: `AzureBackend`, with the
  process's `azure.account_key`.
"""

from __future__ import annotations

from shared.repo.backend import Backend
from shared.repo.errors import RepoError
from shared.repo.local import LocalBackend

_s3: tuple[str, str] | None = None
_azure: str | None = None


def configure(s3_access_key: str, s3_secret_key: str, azure_account_key: str = "") -> None:
    """The credentials S3 and Azure locations are opened with (empty: none configured)."""
    global _s3, _azure
    _s3 = (s3_access_key, s3_secret_key) if s3_access_key else None
    _azure = azure_account_key or None


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
    if location.startswith("azure://"):
        if _azure is None:
            raise RepoError(
                f"repository {location} is on Azure Blob, and no account key is configured:"
                " set VBM_AZURE__ACCOUNT_KEY"
            )
        from shared.repo.azure import AzureBackend

        try:
            return AzureBackend(location, _azure)
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise RepoError(
            f"repository {location}: {scheme}:// is not a supported location (a path, s3:// or azure://)"
        )
    return LocalBackend(location)
