"""Credentials are passed to the backends, never kept in module globals, and never shown."""

from __future__ import annotations

import pytest

from shared.repo import LocalBackend, RepoError
from shared.repo import locations as locations_module
from shared.repo.backends.s3 import S3Backend
from shared.repo.locations import NO_CREDENTIALS, Credentials, open_backend
from shared.settings import Settings, load_settings


def test_credentials_of_the_settings_never_show_a_secret() -> None:
    settings = Settings(
        s3={"access_key": "AKIA-public", "secret_key": "s3-very-secret"},
        azure={"account_key": "azure-very-secret"},
        sftp={"password": "sftp-very-secret", "known_hosts": "/k"},
        rclone={"config": "/r.conf"},
    )
    creds = Credentials.of(settings)
    assert creds.s3_access_key == "AKIA-public" and creds.sftp_known_hosts == "/k"
    assert creds.s3_secret_key.get_secret_value() == "s3-very-secret"
    for shown in (repr(creds), str(creds)):
        assert "very-secret" not in shown
    with pytest.raises(AttributeError):
        creds.s3_access_key = "changed"  # type: ignore[misc]  # frozen
    backend = open_backend("s3://127.0.0.1:9/bucket?tls=false", creds)
    assert isinstance(backend, S3Backend) and "very-secret" not in repr(backend)


def test_no_credentials_no_globals() -> None:
    assert not hasattr(locations_module, "configure")
    with pytest.raises(RepoError, match="no S3 credentials are configured"):
        open_backend("s3://127.0.0.1:9/bucket", NO_CREDENTIALS)
    with pytest.raises(RepoError, match="no account key is configured"):
        open_backend("azure://acct/c", NO_CREDENTIALS)
    assert isinstance(open_backend("/srv/repo", NO_CREDENTIALS), LocalBackend)
    # loading settings configures nothing on the side: the credentials go where they are passed
    load_settings(s3={"access_key": "a", "secret_key": "b"})
    with pytest.raises(RepoError, match="no S3 credentials"):
        open_backend("s3://127.0.0.1:9/bucket", NO_CREDENTIALS)
