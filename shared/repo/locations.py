"""Where a repository lives: a location string names its backend, opened with the credentials
passed in (`Credentials`, built from the settings), and `opened` opens and closes a repository.

- a path (`/srv/vbm/repo`, an NFS mount): `LocalBackend`;
- `s3://<host[:port]>/<bucket>[/<prefix>][?tls=false&region=r]`: `S3Backend`, with the
  credentials' `s3.access_key` and `s3.secret_key`;
- `azure://<account>/<container>[/<prefix>][?endpoint=<account URL>]`: `AzureBackend`, with
  `azure.account_key`;
- `sftp://<user>@<host>[:port]/<absolute path>`: `SFTPBackend`, with `sftp.key_file` or
  `sftp.password`, and `sftp.known_hosts`;
- `rclone://<remote>/<path>`: `RcloneBackend`, a remote of the rclone config file
  (`rclone.config`; rclone's own by default), which holds the provider's credentials.
"""

from __future__ import annotations

import asyncio
import configparser
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import SecretStr

from shared.repo.backend import Backend
from shared.repo.backends.local import LocalBackend
from shared.repo.errors import NotARepository, RepoError
from shared.repo.mountguard import check_location as check_mounted
from shared.repo.repository import Repository

if TYPE_CHECKING:
    from shared.settings import Settings

_NONE = SecretStr("")


@dataclass(frozen=True)
class Credentials:
    """What S3, Azure and SFTP locations are opened with (empty: none configured), and the rclone
    config file rclone:// locations name their remotes in. Secrets stay SecretStr: a repr or an
    error never shows them."""

    s3_access_key: str = ""
    s3_secret_key: SecretStr = field(default=_NONE, repr=False)
    azure_account_key: SecretStr = field(default=_NONE, repr=False)
    sftp_key_file: str | None = None
    sftp_password: SecretStr = field(default=_NONE, repr=False)
    sftp_known_hosts: str | None = None
    rclone_config: str | None = None
    # as text (locations stored through the API): the key, the known_hosts lines, the config
    sftp_private_key: SecretStr = field(default=_NONE, repr=False)
    sftp_known_hosts_text: str | None = None
    rclone_config_text: SecretStr = field(default=_NONE, repr=False)

    @classmethod
    def of(cls, settings: Settings) -> Credentials:
        """The credentials of the settings (their s3, azure, sftp and rclone sections)."""
        return cls(
            s3_access_key=settings.s3.access_key,
            s3_secret_key=settings.s3.secret_key,
            azure_account_key=settings.azure.account_key,
            sftp_key_file=settings.sftp.key_file,
            sftp_password=settings.sftp.password,
            sftp_known_hosts=settings.sftp.known_hosts,
            rclone_config=settings.rclone.config,
        )


NO_CREDENTIALS = Credentials()
# the credentials of each location (shared/catalog/locations.py: stored ones, else the settings')
CredentialsFor = Callable[[str], Credentials]


def credentials_at(credentials: Credentials | CredentialsFor, location: str) -> Credentials:
    """The credentials `location` is opened with: the same for every location, or looked up."""
    return credentials if isinstance(credentials, Credentials) else credentials(location)


def config_env(text: str) -> dict[str, str]:
    """An rclone config file's remotes as rclone's environment variables
    (`RCLONE_CONFIG_<REMOTE>_<KEY>`); ValueError (never quoting a value) when it cannot be read."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        line = getattr(exc, "lineno", "?")
        raise ValueError(f"the rclone config is not an INI file (line {line})") from None
    env = {}
    for remote in parser.sections():
        prefix = "RCLONE_CONFIG_" + re.sub(r"[^A-Z0-9]", "_", remote.upper())
        for key, value in parser.items(remote):
            env[f"{prefix}_{re.sub(r'[^A-Z0-9]', '_', key.upper())}"] = value
    return env


def open_backend(location: str, credentials: Credentials) -> Backend:
    """The backend for `location`; RepoError (what to set) when it cannot be used."""
    # the backends' modules load their client libraries (boto3, azure, asyncssh): only when used
    if location.startswith("s3://"):
        if not credentials.s3_access_key:
            raise RepoError(
                f"repository {location} is on S3, and no S3 credentials are configured:"
                " set VBM_S3__ACCESS_KEY and VBM_S3__SECRET_KEY"
            )
        from shared.repo.backends.s3 import S3Backend

        try:
            return S3Backend(
                location, credentials.s3_access_key, credentials.s3_secret_key.get_secret_value()
            )
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if location.startswith("azure://"):
        if not credentials.azure_account_key.get_secret_value():
            raise RepoError(
                f"repository {location} is on Azure Blob, and no account key is configured:"
                " set VBM_AZURE__ACCOUNT_KEY"
            )
        from shared.repo.backends.azure import AzureBackend

        try:
            return AzureBackend(location, credentials.azure_account_key.get_secret_value())
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if location.startswith("sftp://"):
        from shared.repo.backends.sftp import SFTPBackend

        try:
            return SFTPBackend(  # without a key or password: the SSH agent's keys
                location,
                key_file=credentials.sftp_key_file,
                password=credentials.sftp_password.get_secret_value() or None,
                known_hosts=credentials.sftp_known_hosts,
                private_key=credentials.sftp_private_key.get_secret_value() or None,
                known_hosts_text=credentials.sftp_known_hosts_text,
            )
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if location.startswith("rclone://"):
        from shared.repo.backends.rclone import RcloneBackend

        try:
            text = credentials.rclone_config_text.get_secret_value()
            if text:  # the remotes given as environment variables: no plain-text file is written
                return RcloneBackend(location, env=config_env(text))
            return RcloneBackend(location, config=credentials.rclone_config)
        except ValueError as exc:
            raise RepoError(str(exc)) from None
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise RepoError(
            f"repository {location}: {scheme}:// is not a supported location"
            " (a path, s3://, azure://, sftp:// or rclone://)"
        )
    check_mounted(location)  # never the local disk under an unmounted share (shared/repo/mountguard.py)
    return LocalBackend(location)


@asynccontextmanager
async def opened(location: str, credentials: Credentials) -> AsyncIterator[Repository]:
    """The repository at `location`, its backend closed when the block ends, on every path
    (also when opening fails: NotARepository, an unreachable server)."""
    backend = open_backend(location, credentials)
    try:
        yield await Repository.open(backend)
    finally:
        await backend.close()


async def try_open(location: str, credentials: Credentials) -> str | None:
    """Whether `location` can be used with `credentials`: None when it opens as a repository or
    is empty (the first backup makes one), else what failed (the error, never a secret)."""
    try:
        backend = open_backend(location, credentials)
    except RepoError as exc:
        return str(exc)
    try:
        try:
            await Repository.open(backend)
        except NotARepository:
            if not isinstance(backend, LocalBackend) and [o async for o in _first(backend.list(""))]:
                return f"{location} holds objects that are not a vbm repository"
    except (RepoError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await backend.close()
    return None


async def open_or_init(backend: Backend, chunk_size: int | None = None) -> Repository:
    """The repository on `backend`; one is made when the location is empty (a first backup or
    copy to it). A location holding anything else stays NotARepository: vbm writes nowhere it
    did not make."""
    try:
        return await Repository.open(backend)
    except NotARepository:
        if isinstance(backend, LocalBackend):
            empty = await asyncio.to_thread(_empty_or_missing, str(backend.root))
        else:  # an object store: no object under the location's prefix
            empty = not [o async for o in _first(backend.list(""))]
        if not empty:
            raise
    return await (Repository.init(backend, chunk_size) if chunk_size else Repository.init(backend))


def _empty_or_missing(path: str) -> bool:
    if os.path.isdir(path) and os.listdir(path):
        return False
    os.makedirs(path, exist_ok=True)
    return True


async def _first(objects: AsyncIterator[object]) -> AsyncIterator[object]:
    async for obj in objects:
        yield obj
        return


MAX_LOCATION = 1024


def check_location(value: str) -> str:
    """A repository location as jobs name them: a path, s3://... or azure://... (ValueError says
    how to write one). What can never work is refused here, before it is stored."""
    if len(value) > MAX_LOCATION:
        raise ValueError(f"a repository location is at most {MAX_LOCATION} characters, not {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 or "\ud800" <= c <= "\udfff" for c in value):
        raise ValueError("a repository location cannot hold control characters (NUL, newline...)")
    if value.startswith("s3://"):
        from shared.repo.backends.s3_location import S3Location

        S3Location(value)
    elif value.startswith("azure://"):
        from shared.repo.backends.azure import AzureLocation

        AzureLocation(value)
    elif value.startswith("sftp://"):
        from shared.repo.backends.sftp import SFTPLocation

        SFTPLocation(value)
    elif value.startswith("rclone://"):
        from shared.repo.backends.rclone_daemon import RcloneLocation

        RcloneLocation(value)
    elif "://" in value:
        raise ValueError(
            f"{value.split('://', 1)[0]}:// is not a supported location: a path, s3://, azure://, sftp:// or rclone://"
        )
    elif not value.strip():
        raise ValueError("a repository location cannot be empty")
    return value
