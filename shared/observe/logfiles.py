"""The log files of `vbm up`: each service's lines as JSON objects in `<data_dir>/logs/<service>.jsonl`,
rotated by size (`<service>.jsonl.1` is the one before, up to KEEP of them), read back by `vbm logs`.

The supervisor writes them from its children's output (they log JSON lines, shared/observe/logs.py);
a line that is not a JSON object (a `print`, a crash's traceback) is wrapped as one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024 * 1024
KEEP = 3
SUFFIX = ".jsonl"


def logs_dir(data_dir: Path) -> Path:
    return data_dir / "logs"


def as_record(service: str, line: str) -> dict[str, Any]:
    """A child's output line as a log object (its own when it is one)."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "msg" in obj:
            obj.setdefault("service", service)
            return obj
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    return {"ts": now, "level": "INFO", "service": service, "logger": "output", "msg": line.rstrip()}


class LogFile:
    """One service's file, appended to and rotated when it passes `max_bytes`."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._out: IO[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("a", encoding="utf-8")
        self._out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._out.flush()
        if self._out.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self.close()
        for n in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if n == self.keep:
                older.unlink(missing_ok=True)
            else:
                newer = older.with_name(f"{self.path.name}.{n + 1}")
                if older.exists():
                    older.replace(newer)
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


class LogFiles:
    """Every service's file in one directory: `write` files a child's output line and returns it
    as a log object. A file that cannot be written (a full disk) never stops the caller."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, LogFile] = {}
        self.broken: set[str] = set()

    def write(self, service: str, line: str) -> dict[str, Any]:
        record = as_record(service, line)
        if service not in self.files:
            self.files[service] = LogFile(self.directory / f"{service}{SUFFIX}")
        try:
            self.files[service].write(record)
            self.broken.discard(service)
        except OSError as exc:
            if service not in self.broken:  # said once, not for every line
                self.broken.add(service)
                log.warning("cannot write the log file of %s: %s", service, exc)
        return record

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def files_of(directory: Path, service: str | None = None) -> list[Path]:
    """The log files, oldest rotation first, for every service or one."""
    names = sorted({p.name.split(SUFFIX)[0] for p in directory.glob(f"*{SUFFIX}*")})
    out: list[Path] = []
    for name in names:
        if service is not None and name != service:
            continue
        current = directory / f"{name}{SUFFIX}"
        rotated = sorted(directory.glob(f"{name}{SUFFIX}.*"), key=lambda p: -int(p.suffix[1:] or 0))
        out += [p for p in rotated if p.suffix[1:].isdigit()] + ([current] if current.exists() else [])
    return out


def services_in(directory: Path) -> list[str]:
    return sorted({p.name.split(SUFFIX)[0] for p in directory.glob(f"*{SUFFIX}*")})


def _parse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def matches(record: dict[str, Any], run: str | None) -> bool:
    return run is None or record.get("run_id") == run


def read(directory: Path, *, service: str | None = None, run: str | None = None) -> list[dict[str, Any]]:
    """Every line kept (all services merged in time order), of one run or all."""
    found: list[dict[str, Any]] = []
    for path in files_of(directory, service):
        with path.open(encoding="utf-8", errors="replace") as f:
            found += [r for r in _parse(f) if matches(r, run)]
    found.sort(key=lambda r: str(r.get("ts", "")))
    return found


def follow(
    directory: Path, *, service: str | None = None, run: str | None = None, poll: float = 0.3
) -> Iterator[dict[str, Any]]:
    """Lines written from now on, as they come (a rotation starts the new file from its start)."""
    offsets: dict[Path, int] = {}
    for path in files_of(directory, service):
        if path.suffix == SUFFIX:
            offsets[path] = path.stat().st_size
    while True:
        for name in services_in(directory) if service is None else [service]:
            path = directory / f"{name}{SUFFIX}"
            if not path.exists():
                continue
            size = path.stat().st_size
            start = offsets.get(path, 0)
            if size < start:  # rotated: a new file
                start = 0
            if size > start:
                with path.open("rb") as f:
                    f.seek(start)
                    chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits
                offsets[path] = start + len(complete)
                lines = complete.decode("utf-8", errors="replace").splitlines()
                yield from (r for r in _parse(lines) if matches(r, run))
            else:
                offsets[path] = start
        time.sleep(poll)
