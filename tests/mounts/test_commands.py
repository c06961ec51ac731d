"""The exact mount(8)/umount(8) command lines the manager builds, and what a share refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import Invalid
from shared.mounts.model import credentials_text, mount_argv, umount_argv, validated

DATA = Path("/var/lib/vbm")


def test_nfs_command_line() -> None:
    share = validated(
        {
            "name": "nas",
            "kind": "nfs",
            "server": "nas.example.com",
            "export": "/srv/backup",
            "options": "hard,noatime",
        }
    )
    assert mount_argv(share, DATA, "mount", 0, 0) == [
        "mount", "-t", "nfs", "-o", "nfsvers=4.1,hard,noatime", "nas.example.com:/srv/backup",
        "/var/lib/vbm/mounts/nas",
    ]  # fmt: skip
    v3 = validated({"name": "old", "kind": "nfs", "server": "10.0.0.5", "export": "/export", "version": "3"})
    assert mount_argv(v3, DATA, "/sbin/mount", 0, 0) == [
        "/sbin/mount", "-t", "nfs", "-o", "nfsvers=3", "10.0.0.5:/export", "/var/lib/vbm/mounts/old",
    ]  # fmt: skip


def test_cifs_command_line_keeps_the_password_in_the_credentials_file() -> None:
    share = validated(
        {
            "name": "win", "kind": "cifs", "server": "fs1", "share": "backup", "username": "svc",
            "password": "p@ss word", "domain": "CORP", "options": "seal",
        }
    )  # fmt: skip
    argv = mount_argv(share, DATA, "mount", 1000, 1001)
    assert argv == [
        "mount", "-t", "cifs", "//fs1/backup", "/var/lib/vbm/mounts/win",
        "-o", "credentials=/var/lib/vbm/mounts/.win.credentials,vers=3.0,uid=1000,gid=1001,seal",
    ]  # fmt: skip
    assert "p@ss word" not in " ".join(argv)
    assert credentials_text(share) == "username=svc\npassword=p@ss word\ndomain=CORP\n"
    guest = validated({"name": "pub", "kind": "cifs", "server": "fs1", "share": "public", "version": "2.1"})
    assert mount_argv(guest, DATA, "mount", 0, 0)[-1] == "guest,vers=2.1,uid=0,gid=0"


def test_umount_command_lines() -> None:
    assert umount_argv("nas", DATA, "umount") == ["umount", "/var/lib/vbm/mounts/nas"]
    assert umount_argv("nas", DATA, "umount", lazy=True) == ["umount", "-l", "/var/lib/vbm/mounts/nas"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "nfs", "server": "h", "export": "/e"}, "name"),
        ({"name": "a/b", "kind": "nfs", "server": "h", "export": "/e"}, "name"),
        ({"name": "n", "kind": "smb", "server": "h"}, "kind"),
        ({"name": "n", "kind": "nfs", "server": "h; rm -rf /", "export": "/e"}, "server"),
        ({"name": "n", "kind": "nfs", "server": "h", "export": "e"}, "export"),
        ({"name": "n", "kind": "nfs", "server": "h", "export": "/e/../etc"}, "export"),
        ({"name": "n", "kind": "nfs", "server": "h", "export": "/e", "version": "5"}, "version"),
        ({"name": "n", "kind": "nfs", "server": "h", "export": "/e", "options": "ro,x y"}, "options"),
        ({"name": "n", "kind": "nfs", "server": "h", "export": "/e", "options": "nfsvers=3"}, "options"),
        ({"name": "n", "kind": "nfs", "server": "h", "export": "/e", "password": "x"}, "password"),
        ({"name": "n", "kind": "cifs", "server": "h", "share": "s", "options": "password=x"}, "options"),
        (
            {"name": "n", "kind": "cifs", "server": "h", "share": "s", "options": "credentials=/etc/x"},
            "options",
        ),
        ({"name": "n", "kind": "cifs", "server": "h"}, "share"),
        ({"name": "n", "kind": "cifs", "server": "h", "share": "s", "password": "x"}, "username"),
        (
            {
                "name": "n",
                "kind": "cifs",
                "server": "h",
                "share": "s",
                "username": "u",
                "password": "se\ncret",
            },
            "password",
        ),
        ({"name": "n", "kind": "cifs", "server": "h", "share": "s", "colour": "red"}, "colour"),
    ],
)
def test_bad_shares_name_the_field(body: dict[str, str], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        validated(body)
    assert caught.value.field == field
    assert "cret" not in str(caught.value)  # a password is never quoted back


def test_a_share_repr_hides_the_password() -> None:
    share = validated(
        {"name": "w", "kind": "cifs", "server": "h", "share": "s", "username": "u", "password": "hunter2"}
    )
    assert "hunter2" not in repr(share)
