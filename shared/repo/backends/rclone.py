"""A repository on any of rclone's providers (Google Drive, Backblaze B2, WebDAV, Dropbox, ...),
through the `rclone` program (Debian's package) running as a remote-control daemon.

Location: `rclone://<remote>/<path>`: a remote of the rclone config file (`rclone.config`, i.e.
`VBM_RCLONE__CONFIG`; default rclone's own), which holds the provider's credentials, so none is
in the location or in vbm's settings. One `rclone rcd` per process and config, on a loopback
port with a random password, dies with the process; objects are listed, written, moved and
deleted through its `operations/*` calls and read with HTTP ranges (`--rc-serve`).

What rclone can and cannot promise (providers differ):
- `put_if_absent`: a check, then an upload to `<folder>/.tmp-<random>` and a move onto the key.
  A reader never sees a partial object under a real key; but two writers of the same new key
  can both write it. Chunks and manifests are named by content and unique ids, so that is
  harmless for them; garbage collection's lock is advisory here: run GC from one vbm only.
- `exists` refreshes an object older than `refresh_after` (1 h) with `rclone touch`. Providers
  that keep no settable modification time (plain WebDAV) ignore that: `refreshes` is then False
  (found out on the first refresh) and garbage collection of the repository waits until no
  backup runs (`shared/catalog/prune.py`).
  `delete_if_unused_since` moves the object aside first, then decides by its modification time
  (a writer's refresh in between finds it gone and stores it again).
- Faults: rclone retries a failing provider call itself (`retries` more tries: its
  `--low-level-retries`, paced by its backoff for that provider); a provider quiet for `timeout`
  is an error (`--timeout`, `--contimeout`), and so is a call rclone has not answered after all
  its tries could take. A read whose stream rclone cuts off (the provider's connection reset or
  stalled mid-transfer: rclone does not reopen it) is read again here (`attempts`: 3 tries, 0.5
  then 1 s apart). A failed call says what rclone said, and what that means where it can tell.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import http.client
import json
import posixpath
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from shared.repo.backend import TMP_PREFIX, ObjectInfo, aside_name
from shared.repo.backends.rclone_daemon import RcloneLocation, daemon, meaning, mod_time, what_it_said
from shared.repo.errors import ObjectMissing, RepoError

MISSING = ("object not found", "directory not found", "not found")


class RcloneBackend:
    def __init__(
        self,
        location: str,
        *,
        config: str | None = None,
        env: dict[str, str] | None = None,
        refresh_after: timedelta = timedelta(hours=1),
        timeout: float = 120.0,
        retries: int = 4,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.where = RcloneLocation(location)
        self.location = location
        self.refresh_after = refresh_after
        flags = (
            "--timeout", f"{timeout:g}s", "--contimeout", f"{min(timeout, 60.0):g}s",
            "--low-level-retries", str(retries + 1), "--retries", "3",
        )  # fmt: skip
        self._daemon = daemon(config, env or {}, flags)
        # rclone retries a failing provider call itself, each try quiet for up to `timeout`
        self._provider_timeout = timeout
        self._timeout = timeout * (retries + 2)
        self._attempts, self._backoff = attempts, backoff
        self.refreshes = True  # False once a touch is seen not to move the modification time
        self._probed = False

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return key

    # --- calls to the daemon (blocking; run in threads) -----------------------------------------

    def _auth(self) -> str:
        token = base64.b64encode(f"{self._daemon.user}:{self._daemon.password}".encode()).decode()
        return f"Basic {token}"

    def _rc(self, method: str, doing: str, **params: Any) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self._daemon.url()}/{method}", data=json.dumps(params).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": self._auth()},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                return json.loads(resp.read() or b"{}")  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            message = what_it_said(exc) or str(exc.reason)
            if any(m in message.lower() for m in MISSING):
                raise ObjectMissing(doing) from None
            raise RepoError(f"{self.location}: {doing}: {meaning(message)}rclone says: {message}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(doing, exc) from None

    def _unreachable(self, doing: str, exc: Exception) -> RepoError:
        if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
            return RepoError(
                f"{self.location}: {doing}: timed out: no answer within {self._timeout:g} s (rclone is"
                f" still retrying a provider that stalls, each try quiet for {self._provider_timeout:g} s)"
            )
        return RepoError(
            f"{self.location}: {doing}: rclone rcd cannot be reached ({type(exc).__name__}: {exc})"
        )

    def _stat(self, key: str) -> dict[str, Any] | None:
        item = self._rc("operations/stat", f"checking {key}", fs=self.where.fs, remote=key).get("item")
        return item if isinstance(item, dict) else None

    def _upload(self, folder: str, name: str, data: bytes, doing: str) -> None:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file0"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        url = (
            f"{self._daemon.url()}/operations/uploadfile?fs={quote(self.where.fs, safe='')}"
            f"&remote={quote(folder, safe='')}"
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": self._auth()}
        req = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            message = what_it_said(exc) or str(exc.reason)
            raise RepoError(f"{self.location}: {doing}: {meaning(message)}rclone says: {message}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(doing, exc) from None

    def _touch(self, key: str) -> None:
        result = self._rc(
            "core/command",
            f"refreshing {key}",
            command="touch",
            arg=[f"{self.where.fs}/{key}"],
            opt={"no-create": "true"},
        )
        if result.get("error"):
            raise RepoError(f"{self.location}: refreshing {key}: rclone says: {result.get('result', '')}")

    def _move(self, src: str, dst: str, doing: str) -> None:
        fs = self.where.fs
        self._rc("operations/movefile", doing, srcFs=fs, srcRemote=src, dstFs=fs, dstRemote=dst)

    # --- the contract -----------------------------------------------------------------------

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = False) -> bool:
        return await asyncio.to_thread(self._put, self._key(key), data)

    def _put(self, key: str, data: bytes) -> bool:
        if self._exists(key):
            return False
        folder = posixpath.dirname(key)
        tmp = f"{TMP_PREFIX}{uuid.uuid4().hex}"
        self._upload(folder, tmp, data, f"writing {key}")
        try:
            self._move(posixpath.join(folder, tmp), key, f"writing {key}")
        except RepoError:
            if self._stat(key) is None:
                raise
            # another writer published it first (whole, the same way): ours is not needed
            with contextlib.suppress(RepoError):
                self._rc(
                    "operations/deletefile",
                    f"deleting {tmp}",
                    fs=self.where.fs,
                    remote=posixpath.join(folder, tmp),
                )
            return False
        return True

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return await asyncio.to_thread(self._get, self._key(key), offset, length)

    def _get(self, key: str, offset: int, length: int | None) -> bytes:
        if length == 0:
            return b""
        last = ""
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                return self._get_once(key, offset, length)
            except _BrokeOff as exc:
                last = str(exc)
        raise RepoError(
            f"{self.location}: reading {key}: the transfer broke off {self._attempts} times ({last}):"
            f" the provider's connection was reset, or stalled (timed out: nothing for"
            f" {self._provider_timeout:g} s)"
        )

    def _get_once(self, key: str, offset: int, length: int | None) -> bytes:
        url = f"{self._daemon.url()}/{quote(f'[{self.where.fs}]', safe='')}/{quote(key)}"
        headers = {"Authorization": self._auth()}
        if offset or length is not None:
            headers["Range"] = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=self._timeout
            ) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                if offset and self._stat(key) is not None:
                    return b""  # rclone answers a range from the end on with 404: nothing there
                raise ObjectMissing(key) from None
            if exc.code == 416:
                return b""
            said = what_it_said(exc) or f"HTTP {exc.code}"
            raise RepoError(f"{self.location}: reading {key}: {meaning(said)}rclone says: {said}") from None
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
                raise self._unreachable(f"reading {key}", exc) from None
            raise _BrokeOff(f"{type(exc).__name__}: {str(exc)[:200]}") from None  # cut off mid-answer

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._exists, self._key(key))

    def _exists(self, key: str) -> bool:
        try:
            item = self._stat(key)
        except ObjectMissing:
            return False
        if item is None:
            return False
        if mod_time(item) < datetime.now(UTC) - self.refresh_after:
            try:
                self._touch(key)
            except ObjectMissing:
                return False  # garbage collection took it a moment ago: the caller stores it again
            except RepoError:  # the provider cannot set the time
                self.refreshes = False
                return self._stat(key) is not None
            after = self._stat(key)
            if after is None:
                return False
            if mod_time(after) <= mod_time(item) and self.refreshes:
                self.refreshes = False
        return True

    async def probe_refreshes(self) -> bool:
        """Find out (once) whether the provider keeps the modification time a touch sets, by
        touching the repository's `config`: garbage collection must know before it decides."""
        if not self._probed:
            await asyncio.to_thread(self._probe)
            self._probed = True
        return self.refreshes

    def _probe(self) -> None:
        key = self._key("config")
        before = self._stat(key)
        if before is None:
            return
        if mod_time(before) > datetime.now(UTC) - timedelta(seconds=2):
            time.sleep(2.1)  # a touch within the timestamps' resolution would prove nothing
        try:
            self._touch(key)
        except RepoError:
            self.refreshes = False
            return
        after = self._stat(key)
        if after is None or mod_time(after) <= mod_time(before):
            self.refreshes = False

    async def stat(self, key: str) -> ObjectInfo:
        try:
            item = await asyncio.to_thread(self._stat, self._key(key))
        except ObjectMissing:
            item = None
        if item is None:
            raise ObjectMissing(key)
        return ObjectInfo(key, int(item.get("Size", 0)), mod_time(item))

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""

        def run() -> list[ObjectInfo]:
            try:
                found = self._rc(
                    "operations/list", f"listing {prefix}", fs=self.where.fs, remote=folder,
                    opt={"recurse": True, "filesOnly": True},
                ).get("list") or []  # fmt: skip
            except ObjectMissing:
                return []
            out = []
            for item in found:
                key = str(item["Path"])  # relative to the location, whatever folder was listed
                if key.startswith(prefix) and not posixpath.basename(key).startswith(TMP_PREFIX):
                    out.append(ObjectInfo(key, int(item.get("Size", 0)), mod_time(item)))
            return out

        for info in await asyncio.to_thread(run):
            yield info

    async def delete(self, key: str) -> None:
        with contextlib.suppress(ObjectMissing):
            await asyncio.to_thread(
                self._rc, "operations/deletefile", f"deleting {key}", fs=self.where.fs, remote=self._key(key)
            )

    async def delete_if_unused_since(self, key: str, cutoff: datetime) -> int | None:
        return await asyncio.to_thread(self._delete_if_unused, self._key(key), cutoff)

    def _delete_if_unused(self, key: str, cutoff: datetime) -> int | None:
        aside = posixpath.join(posixpath.dirname(key), aside_name(posixpath.basename(key)))
        try:
            self._move(key, aside, f"deleting {key}")
        except ObjectMissing:
            return None
        item = self._stat(aside)
        if item is None:
            return None
        if mod_time(item) >= cutoff:  # still needed: back where it was (unless stored again meanwhile)
            if self._stat(key) is None:
                self._move(aside, key, f"keeping {key}")
            else:
                self._rc("operations/deletefile", f"deleting {aside}", fs=self.where.fs, remote=aside)
            return None
        self._rc("operations/deletefile", f"deleting {key}", fs=self.where.fs, remote=aside)
        return int(item.get("Size", 0))

    async def leftovers(self) -> builtins.list[ObjectInfo]:
        def run() -> builtins.list[ObjectInfo]:
            try:
                found = self._rc(
                    "operations/list", "listing leftovers", fs=self.where.fs, remote="",
                    opt={"recurse": True, "filesOnly": True},
                ).get("list") or []  # fmt: skip
            except ObjectMissing:
                return []
            return [
                ObjectInfo(str(item["Path"]), int(item.get("Size", 0)), mod_time(item))
                for item in found
                if posixpath.basename(str(item["Path"])).startswith(TMP_PREFIX)
            ]

        return await asyncio.to_thread(run)

    async def put_back(self, aside: str, key: str) -> bool:
        def run() -> bool:
            if self._stat(self._key(aside)) is None:
                return False
            if self._stat(self._key(key)) is None:
                self._move(aside, key, f"putting back {key}")
                # movefile overwrites: had a writer stored the same chunk in between, its fresh
                # time would be lost to the aside's old one; a touch makes it fresh either way
                with contextlib.suppress(RepoError):
                    self._touch(self._key(key))
                return True
            self._rc("operations/deletefile", f"deleting {aside}", fs=self.where.fs, remote=aside)
            return False

        return await asyncio.to_thread(run)

    async def flush(self) -> None:
        return None  # rclone returns when the provider acknowledged the write

    async def usage(self) -> tuple[int | None, int | None]:
        try:
            about = await asyncio.to_thread(
                self._rc, "operations/about", "reading its usage", fs=self.where.fs
            )
        except RepoError:
            return None, None
        return about.get("total"), about.get("free")

    async def close(self) -> None:
        return None  # the daemon is the process's, stopped at exit


class _BrokeOff(Exception):
    """A read's answer from rclone was cut off or could not be had: read again."""
