"""What an SFTP location logs in with: a key file or a key given as text, and the known hosts
from a file or given as text (a location stored through the API: nothing written to a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncssh


def ssh_login(
    location: str, key_file: str | None, key: str | None, hosts_file: str | None, hosts: str | None
) -> tuple[Any, Any, str]:
    """The client keys and known hosts for asyncssh.connect, and how to name the known hosts in
    messages; ValueError (never quoting the key) when the text cannot be read."""
    keys: Any = [key_file] if key_file else None
    if key:
        try:
            keys = [asyncssh.import_private_key(key)]
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError(f"{location}: the private key is not an OpenSSH or PEM key") from None
    if hosts:
        try:
            return keys, asyncssh.import_known_hosts(hosts), "the location's known_hosts"
        except ValueError:
            raise ValueError(f"{location}: known_hosts is not OpenSSH known_hosts lines") from None
    path = hosts_file or str(Path.home() / ".ssh" / "known_hosts")
    return keys, path, path
