"""Where a repository lives: a location string names its backend.

- a path (`/srv/vbm/repo`, an NFS mount): `LocalBackend`;
- `s3://<host[:port]>/<bucket>[/<prefix>][?tls=false&region=r]`: `S3Backend`, with the
  process's S3 credentials (`configure`, called by `load_settings` from `s3.access_key` and
  `s3.secret_key`);
- `azure://<account>/<container>[/<prefix>][?endpoint=<account URL>]`: `AzureBackend`, with the
  process's `azure.account_key`;
- `sftp://<user>@<host>[:port]/<absolute path>`: `SFTPBackend`, with the process's
  `sftp.key_file` or `sftp.password`, and `sftp.known_hosts`;
- `rclone://<remote>/<path>`: `RcloneBackend`, a remote of the rclone config file
  (`rclone.config`; rclone's own by default), which holds the provider's credentials.
"""

from __future__ import annotations

from shared.repo.backend import Backend
from shared.repo.backends.local import LocalBackend
from shared.repo.errors import RepoError

_s3: tuple[str, str] | None = None
_azure: str | None = None
_sftp: dict[str, str | None] = {}
_rclone_config: str | None = None


def configure(
    s3_access_key: str,
    s3_secret_key: str,
    azure_account_key: str = "",
    *,
    sftp_key_file: str | None = None,
    sftp_password: str | None = None,
    sftp_known_hosts: str | None = None,
    rclone_config: str | None = None,
) -> None:
    """The credentials S3, Azure and SFTP locations are opened with (empty: none configured),
    and the rclone config file rclone:// locations name their remotes in."""
    global _s3, _azure, _sftp, _rclone_config
    _rclone_config = rclone_config
    _s3 = (s3_access_key, s3_secret_key) if s3_access_key else None
    _azure = azure_account_key or None
    _sftp = {"key_file": sftp_key_file, "password": sftp_password or None, "known_hosts": sftp_known_hosts}


def open_backend(location: str) -> Backend:
    """The backend for `location`; RepoError (what to set) when it cannot be used."""
    if location.startswith("s3://"):
        if _s3 is None:
            raise RepoError(
                f"repository {location} is on S3, and no S3 credentials are configured:"
                " set VBM_S3__ACCESS_KEY and VBM_S3__SECRET_KEY"
            )
        from shared.repo.backends.s3 import S3Backend

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
        from shared.repo.backends.azure import AzureBackend

        try:
            return AzureBackend(location, _azure)
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if location.startswith("sftp://"):
        from shared.repo.backends.sftp import SFTPBackend

        try:
            return SFTPBackend(  # without a key or password: the SSH agent's keys
                location,
                key_file=_sftp.get("key_file"),
                password=_sftp.get("password"),
                known_hosts=_sftp.get("known_hosts"),
            )
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if location.startswith("rclone://"):
        from shared.repo.backends.rclone import RcloneBackend

        try:
            return RcloneBackend(location, config=_rclone_config)
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise RepoError(
            f"repository {location}: {scheme}:// is not a supported location"
            " (a path, s3://, azure://, sftp:// or rclone://)"
        )
    return LocalBackend(location)


MAX_LOCATION = 1024


def check_location(value: str) -> str:
    """A repository location as jobs name them: a path, s3://... or azure://... (ValueError says
    how to write one). What can never work is refused here, before it is stored."""
    if len(value) > MAX_LOCATION:
        raise ValueError(f"a repository location is at most {MAX_LOCATION} characters, not {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 or "\ud800" <= c <= "\udfff" for c in value):
        raise ValueError("a repository location cannot hold control characters (NUL, newline...)")
    if value.startswith("s3://"):
        from shared.repo.backends.s3 import S3Location

        S3Location(value)
    elif value.startswith("azure://"):
        from shared.repo.backends.azure import AzureLocation

        AzureLocation(value)
    elif value.startswith("sftp://"):
        from shared.repo.backends.sftp import SFTPLocation

        SFTPLocation(value)
    elif value.startswith("rclone://"):
        from shared.repo.backends.rclone import RcloneLocation

        RcloneLocation(value)
    elif "://" in value:
        raise ValueError(
            f"{value.split('://', 1)[0]}:// is not a supported location: a path, s3://, azure://, sftp:// or rclone://"
        )
    elif not value.strip():
        raise ValueError("a repository location cannot be empty")
    return value
