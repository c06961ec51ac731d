"""Write and restore a configuration backup: a tar stream inside the sealed container.

The tar holds `manifest.json` (format, when, vbm version, the database's kind and schema revision,
row counts, the files), the database (`database/vbm.db`, a SQLite copy, or `database/rows.jsonl`,
a PostgreSQL row dump: shared/confbackup/dbcopy.py) and the data directory's keys (`files/...`).
A restore reads the whole file into a staging directory beside the data directory first; only when
the container's last chunk has authenticated does anything move into place.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from shared import __version__
from shared.confbackup import dbcopy
from shared.confbackup.sealed import SealedReader, SealedWriter
from shared.db import current_revision, make_engine, upgrade
from shared.db.migrate import knows_revision
from shared.settings import Settings

# What of the data directory a backup carries (when there), by path under it.
FILES = (
    "keys/report-signing.pem",  # restore-test reports' signing key (shared/catalog/reports.py)
    "secret.key",  # the key that encrypts stored secrets
    "tls/gateway.crt",  # the gateway's self-signed certificate (shared/runtime/tls.py) and key
    "tls/gateway.key",
    "vbm.toml",  # the settings file
)
SETTINGS_FILE = "vbm.toml"  # a restore keeps the new machine's own; the old one as vbm.toml.restored
ENV_SECRET = "VBM_SECRET_KEY"
ENV_SECRET_FILE = "secret-key.env"  # where a restore leaves an included VBM_SECRET_KEY


class RestoreRefused(Exception):
    """The restore would overwrite something; the message says what and how to go on."""


@dataclass
class Made:
    path: Path
    database: str
    counts: dict[str, int]
    files: list[str]
    env_secret: bool


@dataclass
class Restored:
    database: str
    counts: dict[str, int]
    files: list[str] = field(default_factory=list)
    env_secret_file: Path | None = None


def _add(tar: tarfile.TarFile, name: str, path: Path | None = None, data: bytes | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    info.mtime = int(datetime.now(UTC).timestamp())
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        return
    assert path is not None
    info.size = path.stat().st_size
    with path.open("rb") as fh:
        tar.addfile(info, fh)


def write_backup(
    settings: Settings, out: BinaryIO, passphrase: str, *, env_secret: str | None = None
) -> tuple[str, dict[str, int], list[str]]:
    """Write the backup to `out`; (database kind, row counts, files carried)."""
    data_dir = settings.data_dir
    engine = make_engine(settings.db_url)
    sealed = SealedWriter(out, passphrase)
    try:
        source = dbcopy.sqlite_path(settings.db_url)
        if source is not None and not source.is_file():
            raise ValueError(
                f"no vbm database at {source}: is VBM_DATA_DIR (or VBM_DATABASE_URL) the system's?"
            )
        revision = current_revision(engine)
        if revision is None:
            where = engine.url.render_as_string(hide_password=True)
            raise ValueError(f"the database {where} holds no vbm schema: nothing to back up")
        with (
            tempfile.TemporaryDirectory(prefix="vbm-config-backup-") as tmp,
            tarfile.open(fileobj=sealed, mode="w|") as tar,  # type: ignore[call-overload]
        ):
            if source is not None:
                kind, name, copy = "sqlite", "database/vbm.db", Path(tmp) / "vbm.db"
                dbcopy.sqlite_copy(source, copy)
                counts = _counts(f"sqlite:///{copy}")
            else:
                kind, name, copy = engine.url.get_backend_name(), "database/rows.jsonl", Path(tmp) / "rows"
                with copy.open("w", encoding="utf-8") as fh:
                    dbcopy.dump_rows(engine, fh)
                counts = dbcopy.counts(engine)
            files = [f for f in FILES if (data_dir / f).is_file()]
            manifest = {
                "format": 1,
                "created_at": datetime.now(UTC).isoformat(),
                "vbm": __version__,
                "database": {"kind": kind, "revision": revision, "file": name},
                "counts": counts,
                "files": files,
                "env_secret": env_secret is not None,
            }
            _add(tar, "manifest.json", data=json.dumps(manifest, indent=2).encode())
            _add(tar, name, copy)
            for rel in files:
                _add(tar, f"files/{rel}", data_dir / rel)
            if env_secret is not None:
                _add(tar, f"env/{ENV_SECRET}", data=env_secret.encode())
    finally:
        engine.dispose()
    sealed.close()
    return kind, counts, files


def _staged(reader: SealedReader, stage: Path) -> dict[str, Any]:
    """Unpack into `stage` (only the names a backup has, regular files, 0600); the manifest."""
    allowed = {"manifest.json", "database/vbm.db", "database/rows.jsonl", f"env/{ENV_SECRET}"}
    allowed |= {f"files/{f}" for f in FILES}
    with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            if member.name not in allowed or not member.isfile():
                raise ValueError(f"the backup holds {member.name!r}, which no vbm backup has")
            target = stage / member.name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            src = tar.extractfile(member)
            assert src is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(src, fh, 1024 * 1024)
    reader.finish()  # the last chunk authenticated: only now is anything used
    manifest: dict[str, Any] = json.loads((stage / "manifest.json").read_text())
    return manifest


def check_target(settings: Settings, force: bool) -> None:
    data_dir = settings.data_dir
    here = [p.name for p in data_dir.iterdir()] if data_dir.is_dir() else []
    if [name for name in here if name != SETTINGS_FILE] and not force:
        raise RestoreRefused(
            f"the data directory {data_dir.resolve()} is not empty: restore into a new one, or give --force"
            " to overwrite its database and keys (stop vbm first)"
        )
    if dbcopy.sqlite_path(settings.db_url) is None and not force:
        engine = make_engine(settings.db_url)
        try:
            if dbcopy.has_tables(engine):
                where = engine.url.render_as_string(hide_password=True)
                raise RestoreRefused(f"the database {where} is not empty: give --force to replace it")
        finally:
            engine.dispose()


def restore_backup(settings: Settings, src: BinaryIO, passphrase: str, *, force: bool = False) -> Restored:
    """Bring the database and the keys back from `src`; nothing is written unless all of it
    authenticates."""
    check_target(settings, force)
    reader = SealedReader(src, passphrase)
    data_dir = settings.data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-", dir=data_dir.parent))
    try:
        manifest = _staged(reader, stage)
        revision = manifest["database"]["revision"]
        if manifest.get("format") != 1 or (revision and not knows_revision(revision)):
            raise RestoreRefused(
                f"the backup was made by vbm {manifest.get('vbm')} (schema {revision}), newer than this"
                " one: restore it with that version or a newer one"
            )
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        done = Restored(database=manifest["database"]["kind"], counts={})
        _restore_database(settings, stage, manifest)
        for rel in manifest["files"]:
            target = data_dir / rel
            if rel == SETTINGS_FILE and target.exists():  # this machine's settings stay
                target = data_dir / f"{SETTINGS_FILE}.restored"
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(stage / "files" / rel, target)
            target.chmod(0o600)
            done.files.append(str(target.relative_to(data_dir)))
        if manifest.get("env_secret"):
            done.env_secret_file = data_dir / ENV_SECRET_FILE
            os.replace(stage / "env" / ENV_SECRET, done.env_secret_file)
        done.counts = _counts(settings.db_url)
        return done
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _restore_database(settings: Settings, stage: Path, manifest: dict[str, Any]) -> None:
    revision = manifest["database"]["revision"]
    kind = manifest["database"]["kind"]
    staged = stage / manifest["database"]["file"]
    target = dbcopy.sqlite_path(settings.db_url)
    if kind == "sqlite" and target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        for leftover in (target.with_name(target.name + s) for s in ("-wal", "-shm", "-journal")):
            leftover.unlink(missing_ok=True)
        os.replace(staged, target)
        target.chmod(0o600)
        engine = make_engine(settings.db_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        return
    if kind == "sqlite":  # a SQLite copy onto PostgreSQL: its rows, dumped here
        copy = make_engine(f"sqlite:///{staged}")
        rows = stage / "rows.jsonl"
        try:
            with rows.open("w", encoding="utf-8") as fh:
                dbcopy.dump_rows(copy, fh)
        finally:
            copy.dispose()
        staged = rows
    if target is not None:
        target.unlink(missing_ok=True)
    engine = make_engine(settings.db_url)
    try:
        if dbcopy.has_tables(engine):
            dbcopy.drop_everything(engine)
        upgrade(engine, revision or "head")
        with staged.open(encoding="utf-8") as fh:
            dbcopy.load_rows(engine, _lines(fh))
        upgrade(engine)
    finally:
        engine.dispose()


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        return dbcopy.counts(engine)
    finally:
        engine.dispose()


def _lines(fh: IO[str]) -> Iterator[str]:
    for line in fh:
        if line.strip():
            yield line
