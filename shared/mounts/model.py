"""A share vbm mounts (NFS or CIFS), checked, and the exact `mount`/`umount` command lines.

A share is mounted at `<data_dir>/mounts/<name>`. NFS: `mount -t nfs -o nfsvers=<v>[,<options>]
<server>:<export> <dir>`. CIFS: `mount -t cifs //<server>/<share> <dir> -o
credentials=<file>,vers=<v>,uid=<vbm's uid>,gid=<vbm's gid>[,<options>]`: the user name, password
and domain go in a credentials file (mode 0600, removed once mount has read it), never on the
command line, so neither `ps` nor the shown command line carries the password.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import Invalid

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KINDS = ("nfs", "cifs")
VERSIONS = {"nfs": ("3", "4", "4.0", "4.1", "4.2"), "cifs": ("2.0", "2.1", "3.0", "3.02", "3.1.1")}
DEFAULT_VERSION = {"nfs": "4.1", "cifs": "3.0"}
# a host name, an IPv4 address or an IPv6 address in brackets
SERVER = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*|\[[0-9A-Fa-f:.]+\])$")
EXPORT = re.compile(r"^/[A-Za-z0-9_./@+-]*$")
SHARE = re.compile(r"^[A-Za-z0-9_.$@+ -]{1,80}$")
OPTION = re.compile(r"^[A-Za-z0-9_]+(?:=[A-Za-z0-9_./:@+-]+)?$")
USER = re.compile(r"^[A-Za-z0-9_.@$+-]{1,64}$")
# options the fields set, or that would carry a secret onto the command line
RESERVED = {
    "nfs": {"nfsvers", "vers"},
    "cifs": {"vers", "credentials", "username", "user", "password", "pass", "domain", "dom", "uid", "gid"},
}
PLAIN = ("kind", "server", "export", "share", "version", "options", "username", "domain")
SECRET = ("password",)
MOUNTS_DIR = "mounts"


@dataclass(frozen=True)
class Share:
    """A share and how to mount it; `password` (CIFS) in plain text, in memory only."""

    name: str
    kind: str
    server: str
    export: str = ""  # nfs: the exported path
    share: str = ""  # cifs: the share's name
    version: str = ""
    options: tuple[str, ...] = ()
    username: str = ""
    domain: str = ""
    password: str = field(default="", repr=False)

    @property
    def source(self) -> str:
        """What mount(8) is given as the device: `server:/export` or `//server/share`."""
        return f"{self.server}:{self.export}" if self.kind == "nfs" else f"//{self.server}/{self.share}"

    def plain(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "server": self.server,
            "export": self.export or None,
            "share": self.share or None,
            "version": self.version,
            "options": ",".join(self.options),
            "username": self.username or None,
            "domain": self.domain or None,
        }


def mount_point(data_dir: Path, name: str) -> Path:
    return (data_dir / MOUNTS_DIR / name).resolve()


def credentials_file(data_dir: Path, name: str) -> Path:
    """Where the CIFS credentials are written for the time mount(8) runs."""
    return (data_dir / MOUNTS_DIR / f".{name}.credentials").resolve()


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(key, "must be a string")
    return value.strip() if key != "password" else value


def validated(body: Any, name: str | None = None) -> Share:
    """A body (POST, or PUT merged with what is stored) as a share: 422 naming the field."""
    if not isinstance(body, dict):
        raise Invalid("(body)", "must be a JSON object: name, kind (nfs or cifs), server, export or share")
    for key in body:
        if key not in ("name", *PLAIN, *SECRET):
            raise Invalid(key, f"is not a field of a mount ({', '.join(('name', *PLAIN, *SECRET))})")
    name = body.get("name") if name is None else name
    if not isinstance(name, str) or not NAME.match(name):
        raise Invalid("name", "is required: 1 to 64 letters, digits, '_', '.' or '-'")
    kind = _text(body, "kind")
    if kind not in KINDS:
        raise Invalid("kind", "is required: nfs or cifs")
    server = _text(body, "server")
    if not SERVER.match(server):
        raise Invalid("server", "is required: a host name or IP address (IPv6 in brackets), nothing else")
    version = _text(body, "version") or DEFAULT_VERSION[kind]
    if version not in VERSIONS[kind]:
        raise Invalid("version", f"must be one of {', '.join(VERSIONS[kind])} for {kind}")
    options = tuple(o.strip() for o in _text(body, "options").split(",") if o.strip())
    for opt in options:
        if not OPTION.match(opt):
            raise Invalid("options", f"{opt!r} is not a mount option (key or key=value, no spaces or quotes)")
        if opt.split("=", 1)[0].lower() in RESERVED[kind]:
            fields = "version" if kind == "nfs" else "version, username, password and domain"
            raise Invalid("options", f"{opt.split('=', 1)[0]!r} is set by vbm: use the fields ({fields})")
    export, share = _text(body, "export"), _text(body, "share")
    username, domain, password = _text(body, "username"), _text(body, "domain"), _text(body, "password")
    if kind == "nfs":
        if not EXPORT.match(export) or ".." in export.split("/"):
            raise Invalid("export", "is required for nfs: the exported path, e.g. /srv/backup")
        for key in ("share", "username", "domain", "password"):
            if body.get(key):
                raise Invalid(key, "is not used by nfs mounts (they take server, export, version, options)")
    else:
        share = share.strip("/")
        if not SHARE.match(share):
            raise Invalid("share", "is required for cifs: the share's name, e.g. backup")
        if body.get("export"):
            raise Invalid("export", "is not used by cifs mounts: give the share's name as share")
        if username and not USER.match(username):
            raise Invalid("username", "1 to 64 letters, digits or . _ @ $ + -")
        if domain and not USER.match(domain):
            raise Invalid("domain", "1 to 64 letters, digits or . _ @ $ + -")
        if any(c in password for c in "\r\n\0"):
            raise Invalid(
                "password", "cannot hold a line break or NUL (mount.cifs reads it from a file line)"
            )
        if password and not username:
            raise Invalid("username", "is required with a password (without both: a guest login)")
    return Share(name, kind, server, export, share, version, options, username, domain, password)


def mount_argv(share: Share, data_dir: Path, program: str, uid: int, gid: int) -> list[str]:
    """The mount(8) command line for `share` (never a secret: CIFS logins are in the file)."""
    point = str(mount_point(data_dir, share.name))
    if share.kind == "nfs":
        opts = [f"nfsvers={share.version}", *share.options]
        return [*shlex.split(program), "-t", "nfs", "-o", ",".join(opts), share.source, point]
    login = f"credentials={credentials_file(data_dir, share.name)}" if share.username else "guest"
    opts = [login, f"vers={share.version}", f"uid={uid}", f"gid={gid}", *share.options]
    return [*shlex.split(program), "-t", "cifs", share.source, point, "-o", ",".join(opts)]


def umount_argv(share_name: str, data_dir: Path, program: str, *, lazy: bool = False) -> list[str]:
    point = str(mount_point(data_dir, share_name))
    return [*shlex.split(program), *(["-l"] if lazy else []), point]


def credentials_text(share: Share) -> str:
    """The CIFS credentials file (mount.cifs(8): username=, password=, domain= lines)."""
    lines = [f"username={share.username}", f"password={share.password}"]
    if share.domain:
        lines.append(f"domain={share.domain}")
    return "\n".join(lines) + "\n"
