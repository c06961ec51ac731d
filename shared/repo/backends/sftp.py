"""A repository on an SFTP server (OpenSSH's or any with its extensions), through `asyncssh`.

Location: `sftp://<user>@<host>[:port]/<absolute path>`. The secret is not in the location: the
process's `sftp.key_file` (a private key) or `sftp.password`; the server's host key must be in
`sftp.known_hosts` (an OpenSSH known_hosts file; unset: `~/.ssh/known_hosts`), so a server
that is not the one expected is refused. Nothing secret appears in a log line or an error.

The contract, as the local backend keeps it (the same steps, over SFTP):
- `put_if_absent`: written to `<folder>/.tmp-<random>`, fsynced (`fsync@openssh.com`), then
  published with a hard link (`hardlink@openssh.com`), which fails when the name exists; the
  temporary name is removed. Readers never see a partial object under a real key; listings skip
  `.tmp-*` names. Every write is durable when it returns: `flush()` has nothing left to do.
- `exists` (and put onto an existing key) refreshes the object's modification time (`utime`).
- `delete_if_unused_since`: the object is renamed aside to a unique name first (a writer's
  refresh then finds it gone and stores it again), then its modification time decides: touched
  since the cut-off, it is linked back. Atomic against a refresh.
- `usage`: `statvfs@openssh.com`.
- Faults: a lost connection, or one on which a call makes no progress for `timeout` (30 s; reads
  and writes progress by the MiB), is aborted, opened again and the call retried (`attempts`: 3
  tries, 0.5 then 1 s apart): every call is safe to repeat (a write that was published whole
  meanwhile is found and refreshed). A refused login or host key fails at once, saying what to
  check.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import posixpath
import stat as statmod
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import unquote, urlsplit

with warnings.catch_warnings():
    # asyncssh touches cryptography's deprecated DSA at import (ronf/asyncssh#826 is the same for
    # FFDH): not ours to fix, and not worth a warning in every service log. pyproject.toml says so too.
    warnings.filterwarnings("ignore", "DSA is deprecated", module="asyncssh")
    import asyncssh

from shared.repo.backend import TMP_PREFIX, ObjectInfo, aside_name
from shared.repo.backends.sftp_watchdog import Activity, Watchdog, progress, watching
from shared.repo.backends.ssh_login import ssh_login
from shared.repo.errors import ObjectMissing, RepoError

T = TypeVar("T")
ATTEMPTS = 3
PIECE = 1 << 20  # objects are read and written in pieces this big: each one is progress
LOST = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)  # SFTPErrors, but retried


class SFTPLocation:
    def __init__(self, location: str) -> None:
        parts = urlsplit(location)
        if (
            parts.scheme != "sftp"
            or not parts.hostname
            or not parts.username
            or not parts.path.startswith("/")
        ):
            raise ValueError(
                f"{location!r} is not an SFTP location: write sftp://<user>@<host>[:port]/<absolute path>"
            )
        if parts.password is not None:
            raise ValueError(
                "an SFTP location carries no password: set VBM_SFTP__PASSWORD or VBM_SFTP__KEY_FILE"
            )
        self.user = unquote(parts.username)
        self.host = parts.hostname
        self.port = parts.port or 22
        self.root = posixpath.normpath(unquote(parts.path))
        self.location = location


class SFTPBackend:
    def __init__(
        self,
        location: str,
        *,
        key_file: str | None = None,
        password: str | None = None,
        known_hosts: str | None = None,
        private_key: str | None = None,
        known_hosts_text: str | None = None,
        timeout: float = 30.0,
        attempts: int = ATTEMPTS,
        backoff: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.where = SFTPLocation(location)
        self.location = location
        self._key_file, self._password = key_file, password
        self._client_keys, self._hosts, self._known_hosts = ssh_login(
            location, key_file, private_key, known_hosts, known_hosts_text
        )
        self._timeout = timeout
        self._attempts, self._backoff = attempts, backoff
        self._clock = clock
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._activity: Activity | None = None  # of the current connection
        self._lock = asyncio.Lock()

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return posixpath.join(self.where.root, key)

    def _name(self) -> str:
        return f"sftp://{self.where.user}@{self.where.host}:{self.where.port}{self.where.root}"

    async def _client(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        async with self._lock:
            if self._conn is not None and self._conn.is_closed():  # by the server or the network
                self._conn, self._sftp = None, None
            if self._conn is None or self._sftp is None:
                try:
                    self._conn, self._sftp = await asyncio.wait_for(self._open(), self._timeout)
                    self._activity = Activity()
                except asyncssh.PermissionDenied:
                    raise RepoError(
                        f"{self._name()}: the login was refused: check VBM_SFTP__KEY_FILE or"
                        " VBM_SFTP__PASSWORD and the user's authorized keys"
                    ) from None
                except asyncssh.HostKeyNotVerifiable:
                    raise RepoError(
                        f"{self._name()}: the server's host key is not the one in {self._known_hosts}:"
                        " add it (ssh-keyscan) or check that this is the right server"
                    ) from None
                except TimeoutError:
                    raise _Lost(f"cannot connect: no answer within {self._timeout:g} s (timed out)") from None
                except (OSError, asyncssh.Error) as exc:
                    raise _Lost(f"cannot connect ({type(exc).__name__}: {exc})") from None
            conn, sftp = self._conn, self._sftp
            assert conn is not None and sftp is not None
            return conn, sftp

    async def _open(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        conn = await asyncssh.connect(
            self.where.host, self.where.port, username=self.where.user,
            client_keys=self._client_keys,
            password=self._password, known_hosts=self._hosts,
            keepalive_interval=15, login_timeout=self._timeout,
        )  # fmt: skip
        try:
            return conn, await conn.start_sftp_client()
        except BaseException:
            conn.abort()
            raise

    async def _drop(self, conn: asyncssh.SSHClientConnection | None) -> None:
        """Abort a connection that failed (no clean close: the other end may not be reading)."""
        async with self._lock:
            if self._conn is conn:
                self._conn, self._sftp = None, None
        if conn is not None:
            conn.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 1)

    async def _run(self, doing: str, fn: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        last = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            conn: asyncssh.SSHClientConnection | None = None
            watch: Watchdog | None = None
            try:
                conn, sftp = await self._client()
                assert self._activity is not None  # set with the connection
                watch = Watchdog(conn, self._timeout, self._activity)
                token = watching.set(watch)
                try:
                    return await fn(sftp)
                finally:
                    watch.cancel()
                    watching.reset(token)
            except _Lost as exc:
                last = str(exc)
            except asyncssh.SFTPNoSuchFile:
                raise ObjectMissing(doing) from None
            except LOST as exc:
                last = self._lost(exc, watch)
                await self._drop(conn)
            except asyncssh.SFTPError as exc:
                raise RepoError(f"{self._name()}: {doing}: {exc.reason} (SFTP code {exc.code})") from None
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                last = self._lost(exc, watch)
                await self._drop(conn)
        raise RepoError(f"{self._name()}: {doing}: the connection failed {self._attempts} times ({last})")

    def _lost(self, exc: Exception, watch: Watchdog | None) -> str:
        if watch is not None and watch.fired:
            return f"timed out: nothing moved for {self._timeout:g} s, a stalled server or network"
        return f"{type(exc).__name__}: {exc}"

    def _now(self) -> tuple[float, float] | None:
        t = datetime.now(UTC).timestamp() if self._clock is None else self._clock()
        return (t, t)

    # --- the contract -----------------------------------------------------------------------

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = False) -> bool:
        path = self._path(key)

        async def run(sftp: asyncssh.SFTPClient) -> bool:
            if await self._refresh(sftp, path):
                return False
            folder = posixpath.dirname(path)
            tmp = posixpath.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
            try:
                f = await sftp.open(tmp, "wb")
            except asyncssh.SFTPNoSuchFile:
                await sftp.makedirs(folder, exist_ok=True)
                f = await sftp.open(tmp, "wb")
            try:
                async with f:
                    for start in range(0, len(data), PIECE):
                        await f.write(data[start : start + PIECE], start)
                        progress()
                    await f.fsync()
                try:
                    await sftp.link(tmp, path)
                except asyncssh.SFTPError:
                    if await sftp.exists(path):  # someone else's, whole (published the same way)
                        return False
                    raise
                return True
            finally:
                with contextlib.suppress(asyncssh.SFTPError):
                    await sftp.remove(tmp)

        return await self._run(f"writing {key}", run)

    async def _refresh(self, sftp: asyncssh.SFTPClient, path: str) -> bool:
        """Touch an existing object (the caller relies on it now); False if there is none."""
        try:
            await sftp.utime(path, self._now())
        except asyncssh.SFTPNoSuchFile:
            return False
        return True

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""

        async def run(sftp: asyncssh.SFTPClient) -> bytes:
            out = bytearray()
            async with sftp.open(self._path(key), "rb") as f:
                while length is None or len(out) < length:
                    want = PIECE if length is None else min(PIECE, length - len(out))
                    data = await f.read(want, offset + len(out))
                    assert isinstance(data, bytes)  # opened in binary mode
                    progress()
                    out += data
                    if len(data) < want:  # the end of the object
                        break
            return bytes(out)

        try:
            return await self._run(f"reading {key}", run)
        except ObjectMissing:
            raise ObjectMissing(key) from None

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        return await self._run(f"checking {key}", lambda sftp: self._refresh(sftp, path))

    async def stat(self, key: str) -> ObjectInfo:
        try:
            attrs = await self._run(f"checking {key}", lambda sftp: sftp.stat(self._path(key)))
        except ObjectMissing:
            raise ObjectMissing(key) from None
        return ObjectInfo(key, int(attrs.size or 0), datetime.fromtimestamp(attrs.mtime or 0, UTC))

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        base = posixpath.dirname(self._path(prefix.rstrip("/") + "/x")) if prefix else self.where.root
        for info in await self._files(base, f"listing {prefix}", hidden=False):
            if info.key.startswith(prefix):
                yield info

    async def _files(self, base: str, doing: str, *, hidden: bool) -> builtins.list[ObjectInfo]:
        """Every file under `base`: the hidden `.tmp-*` ones (`hidden`) or all the others."""
        found: builtins.list[ObjectInfo] = []

        async def walk(sftp: asyncssh.SFTPClient) -> None:
            found.clear()  # a retry after a lost connection walks again from the start
            stack = [base]
            while stack:
                folder = stack.pop()
                try:
                    entries = await sftp.readdir(folder)
                except asyncssh.SFTPNoSuchFile:
                    continue
                progress()
                for entry in entries:
                    name = str(entry.filename)
                    if name in (".", ".."):
                        continue
                    full = posixpath.join(folder, name)
                    if entry.attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY or (
                        entry.attrs.permissions is not None and statmod.S_ISDIR(entry.attrs.permissions)
                    ):
                        if hidden or not name.startswith(TMP_PREFIX):
                            stack.append(full)
                    elif name.startswith(TMP_PREFIX) == hidden:
                        key = posixpath.relpath(full, self.where.root)
                        when = datetime.fromtimestamp(entry.attrs.mtime or 0, UTC)
                        found.append(ObjectInfo(key, int(entry.attrs.size or 0), when))

        await self._run(doing, walk)
        return found

    async def delete(self, key: str) -> None:
        try:
            await self._run(f"deleting {key}", lambda sftp: sftp.remove(self._path(key)))
        except ObjectMissing:
            return

    async def delete_if_unused_since(self, key: str, cutoff: datetime) -> int | None:
        path = self._path(key)
        aside = posixpath.join(posixpath.dirname(path), aside_name(posixpath.basename(path)))

        async def run(sftp: asyncssh.SFTPClient) -> int | None:
            try:
                await sftp.rename(path, aside)
            except asyncssh.SFTPNoSuchFile:
                return None
            attrs = await sftp.stat(aside)
            if (attrs.mtime or 0) >= cutoff.timestamp():
                try:
                    await sftp.link(aside, path)  # still needed: back where it was
                except asyncssh.SFTPError:
                    if not await sftp.exists(path):  # not "stored again meanwhile": keep the aside
                        raise  # (the next GC's clean-up puts it back)
                await sftp.remove(aside)
                return None
            await sftp.remove(aside)
            return int(attrs.size or 0)

        return await self._run(f"deleting {key}", run)

    async def leftovers(self) -> builtins.list[ObjectInfo]:
        return await self._files(self.where.root, "listing leftovers", hidden=True)

    async def put_back(self, aside: str, key: str) -> bool:
        src, dst = self._path(aside), self._path(key)

        async def run(sftp: asyncssh.SFTPClient) -> bool:
            try:
                await sftp.link(src, dst)
                back = True
            except asyncssh.SFTPNoSuchFile:
                return False
            except asyncssh.SFTPError:
                if not await sftp.exists(dst):
                    raise  # not "the name exists": keep the aside for the next try
                back = False  # stored again meanwhile
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(src)
            return back

        return await self._run(f"putting back {key}", run)

    async def flush(self) -> None:
        return None  # every write was fsynced before it was published

    async def usage(self) -> tuple[int | None, int | None]:
        try:
            vfs = await self._run("reading its usage", lambda sftp: sftp.statvfs(self.where.root))
        except RepoError:
            return None, None
        return int(vfs.blocks * vfs.frsize), int(vfs.bavail * vfs.frsize)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), min(self._timeout, 5))
            except (TimeoutError, OSError, asyncssh.Error):
                conn.abort()


class _Lost(Exception):
    """The connection could not be opened or was lost: retried."""
