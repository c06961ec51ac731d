"""Credentials given as text, as locations stored through the API hold them, on real servers: an
SFTP private key and known_hosts lines (no file written), an rclone config (passed to rclone as
its environment variables, no file written)."""

from __future__ import annotations

from pathlib import Path

import asyncssh
from pydantic import SecretStr

from shared.catalog import locations as locstore
from shared.errors import Invalid
from shared.repo.locations import Credentials, config_env, open_backend, open_or_init, try_open
from tests.plugins.rclone import WebDAVServer
from tests.plugins.sftp import SFTPServer


def rclone_text(server: WebDAVServer, name: str = "vbmdav") -> str:
    prefix = f"RCLONE_CONFIG_{name.upper()}_"
    lines = [f"{k.removeprefix(prefix).lower()} = {v}" for k, v in server.remote_env(name).items()]
    return f"[{name}]\n" + "\n".join(lines) + "\n"


async def test_an_sftp_key_and_known_hosts_as_text(sftp_server: SFTPServer, tmp_path: Path) -> None:
    location = sftp_server.location(f"/{tmp_path.name}-stored")
    body = {
        "name": "s",
        "url": location,
        "private_key": sftp_server.key_file.read_text(),
        "known_hosts": sftp_server.known_hosts.read_text(),
    }
    creds = locstore.validated(body).credentials()
    assert "BEGIN" not in repr(creds)
    backend = open_backend(location, creds)
    try:
        repo = await open_or_init(backend)
        assert repo.config.chunk_size > 0
    finally:
        await backend.close()
    assert await try_open(location, creds) is None

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong = Credentials(
        sftp_private_key=creds.sftp_private_key,
        sftp_known_hosts_text=f"[127.0.0.1]:{sftp_server.port} {other}\n",
    )
    failed = await try_open(location, wrong)
    assert failed is not None and "host key is not the one in the location's known_hosts" in failed
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    refused = Credentials(
        sftp_private_key=SecretStr(stranger), sftp_known_hosts_text=creds.sftp_known_hosts_text
    )
    failed = await try_open(location, refused)
    assert failed is not None and "login was refused" in failed and "PRIVATE" not in failed


async def test_an_rclone_config_as_text(webdav_server: WebDAVServer, tmp_path: Path) -> None:
    location = f"rclone://vbmdav/{tmp_path.name}-stored"
    text = rclone_text(webdav_server)
    assert set(config_env(text)) == set(webdav_server.remote_env())  # (rclone obscure salts anew)
    creds = locstore.validated({"name": "r", "url": location, "config": text}).credentials()
    backend = open_backend(location, creds)
    try:
        repo = await open_or_init(backend)
        assert repo.config.chunk_size > 0
    finally:
        await backend.close()
    assert await try_open(location, creds) is None


def test_an_rclone_config_becomes_rclone_variables() -> None:
    text = "[my-dav]\ntype = webdav\nurl = http://h:1\npass = Obscured-0a\n\n[s3x]\ntype = s3\n"
    assert config_env(text) == {
        "RCLONE_CONFIG_MY_DAV_TYPE": "webdav",
        "RCLONE_CONFIG_MY_DAV_URL": "http://h:1",
        "RCLONE_CONFIG_MY_DAV_PASS": "Obscured-0a",
        "RCLONE_CONFIG_S3X_TYPE": "s3",
    }
    try:
        config_env("pass = Obscured-0a\n")
    except ValueError as exc:
        assert "Obscured" not in str(exc) and "not an INI file" in str(exc)
    else:
        raise AssertionError("a config without a section was accepted")


def test_text_credentials_that_cannot_work_are_refused_naming_the_field() -> None:
    cases = [
        ({"url": "sftp://u@h/p", "private_key": "-----BEGIN nonsense"}, "private_key"),
        ({"url": "sftp://u@h/p", "password": "p", "known_hosts": "not a line"}, "known_hosts"),
        ({"url": "sftp://u@h/p"}, "password"),
        ({"url": "rclone://r/p", "config": "no section"}, "config"),
        ({"url": "rclone://r/p", "config": "[r]\nurl = x\n"}, "config"),
        ({"url": "azure://acct/c"}, "account_key"),
        ({"url": "/srv/repo", "secret_key": "x"}, "secret_key"),
    ]
    for body, field in cases:
        try:
            locstore.validated({"name": "x", **body})
        except Invalid as exc:
            assert exc.field == field, (body, exc)
            assert "nonsense" not in str(exc)
        else:
            raise AssertionError(f"accepted {body}")
