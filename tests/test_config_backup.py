"""Configuration backups between database engines: SQLite and PostgreSQL, each way.

A catalog (a job, a run and its outbox message, an API key, a usage sample: strings, JSON,
timestamps, dates, booleans, floats and a serial key) is backed up through `vbm config-backup`
and restored through `vbm config-restore` onto each engine: every row of every table reads back
the same, the schema is the newest, and new rows take fresh serial keys. The sealed container's
own refusals (wrong passphrase, a damaged header, a short passphrase) are checked here too.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.catalog import apikeys
from shared.catalog.jobs import job_row
from shared.catalog.runs import request_run
from shared.confbackup import dbcopy
from shared.confbackup.sealed import (
    AuthenticationFailed,
    SealedReader,
    SealedWriter,
    SealError,
    WrongPassphrase,
)
from shared.db import current_revision, head_revision, make_engine, make_sessionmaker, upgrade
from shared.db.models import Job, Outbox
from shared.db.usage import UsageSample, UsageState
from shared.model.jobs import JobSpec
from tests.plugins.postgres import private_database

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 26, 9, 0, 1, 250000, tzinfo=UTC)
PASSPHRASE = "a passphrase long enough"


@pytest.fixture(params=["sqlite", "postgresql"])
def other_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'other' / 'vbm.db'}"
    else:
        with private_database() as url:
            yield url


def fill(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    try:
        with make_sessionmaker(engine).begin() as s:
            spec = JobSpec.model_validate(
                {"name": "nightly", "vcenter": "lab", "vms": [{"moref": "vm-1", "name": "web ü"}]}
            )
            job = job_row(spec, "job-nightly", T0, "/srv/repo")
            s.add(job)
            s.flush()
            assert request_run(s, job, trigger="manual", now=T0) is not None
            apikeys.create(s, "ops", T0)
            s.add(
                UsageSample(
                    repository="/srv/repo", day=date(2026, 11, 26), stored=5, logical=9, sampled_at=T0
                )
            )
            s.add(UsageState(repository="/srv/repo", above=True, percent=91.5, changed_at=T0))
    finally:
        engine.dispose()


def rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, timestamps normalised to aware UTC text."""
    engine = make_engine(url)
    out = io.StringIO()
    try:
        dbcopy.dump_rows(engine, out)
    finally:
        engine.dispose()
    tables: dict[str, list[dict[str, Any]]] = {}
    for line in out.getvalue().splitlines():
        item = json.loads(line)
        row = {k: _norm(v) for k, v in item["r"].items()}
        tables.setdefault(item["t"], []).append(row)
    return tables


def _norm(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 19 and value[10] in "T ":
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return value
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return value


def vbm(data: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update(VBM_DATA_DIR=str(data), VBM_DATABASE_URL=url, VBM_CONFIG_BACKUP__PASSPHRASE=PASSPHRASE)
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_backup_restores_across_engines(db_url: str, other_url: str, tmp_path: Path) -> None:
    fill(db_url)
    before = rows(db_url)
    assert {"jobs", "runs", "outbox", "api_keys", "usage_samples"} <= before.keys()
    out = tmp_path / "cfg.vbmcfg"
    made = vbm(tmp_path / "data", db_url, "config-backup", "-o", str(out))
    assert made.returncode == 0, made.stderr
    assert "1 jobs" in made.stdout and "1 API keys" in made.stdout

    done = vbm(tmp_path / "new", other_url, "config-restore", str(out))
    assert done.returncode == 0, done.stderr
    assert "1 jobs, 0 restore points, 1 runs" in done.stdout
    assert rows(other_url) == before
    engine = make_engine(other_url)
    try:
        assert current_revision(engine) == head_revision()
        with make_sessionmaker(engine).begin() as s:  # serial keys go on after the restored rows
            job = s.get(Job, "job-nightly")
            assert job is not None and request_run(s, job, trigger="manual", now=T0) is not None
        with make_sessionmaker(engine)() as s:
            assert sorted(o.id for o in s.query(Outbox)) == [1, 2]
    finally:
        engine.dispose()
    # a database with vbm in it is not replaced unless asked
    if not other_url.startswith("sqlite"):
        refused = vbm(tmp_path / "newer", other_url, "config-restore", str(out))
        assert refused.returncode == 2 and "is not empty: give --force" in refused.stderr
        forced = vbm(tmp_path / "newer", other_url, "config-restore", str(out), "--force")
        assert forced.returncode == 0, forced.stderr
        assert rows(other_url) == before


def seal(data: bytes, passphrase: str = PASSPHRASE) -> bytes:
    out = io.BytesIO()
    writer = SealedWriter(out, passphrase)
    writer.write(data)
    writer.close()
    return out.getvalue()


def unseal(blob: bytes, passphrase: str = PASSPHRASE) -> bytes:
    reader = SealedReader(io.BytesIO(blob), passphrase)
    data = reader.read()
    reader.finish()
    return data


def test_sealed_container_refuses_what_it_should() -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)  # three chunks
    blob = seal(data)
    assert unseal(blob) == data and unseal(seal(b"")) == b""
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        unseal(blob, "another passphrase!")
    with pytest.raises(SealError, match="at least 12 characters"):
        seal(b"x", "short")
    header_end = blob.index(b"}") + 1
    for where, message in (
        (header_end - 3, "wrong passphrase|damaged"),  # inside the header (the check value)
        (header_end + 40, "chunk 0 fails authentication"),
        (len(blob) - 5, "chunk 2 fails authentication"),
    ):
        broken = bytearray(blob)
        broken[where] ^= 0x40
        with pytest.raises(SealError, match=message):
            unseal(bytes(broken))
    with pytest.raises(AuthenticationFailed, match="bytes after its last chunk"):
        unseal(blob + b"x")
    with pytest.raises(SealError, match="not a vbm configuration backup"):
        unseal(b"PK" + blob)


def test_a_backup_of_a_newer_schema_is_refused_and_nothing_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vbm.db'}"
    fill(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    finally:
        engine.dispose()
    out = tmp_path / "cfg.vbmcfg"
    assert vbm(tmp_path / "data", url, "config-backup", "-o", str(out)).returncode == 0
    refused = vbm(tmp_path / "new", f"sqlite:///{tmp_path / 'new' / 'vbm.db'}", "config-restore", str(out))
    assert refused.returncode == 2 and "schema 9999), newer than this one" in refused.stderr, refused.stderr
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new.restore-*"))


def test_the_new_machines_settings_file_stays_and_a_missing_database_is_said(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    missing = vbm(old, f"sqlite:///{old / 'vbm.db'}", "config-backup", "-o", str(tmp_path / "x.vbmcfg"))
    assert missing.returncode == 2 and f"no vbm database at {old / 'vbm.db'}" in missing.stderr
    assert not (tmp_path / "x.vbmcfg").exists() and not list(tmp_path.glob(".x.vbmcfg*"))

    fill(f"sqlite:///{old / 'vbm.db'}")
    (old / "vbm.toml").write_text('log_level = "WARNING"\n')
    out = tmp_path / "cfg.vbmcfg"
    assert vbm(old, f"sqlite:///{old / 'vbm.db'}", "config-backup", "-o", str(out)).returncode == 0
    new.mkdir()
    (new / "vbm.toml").write_text('log_level = "DEBUG"\n')  # set up before the restore: not "in use"
    done = vbm(new, f"sqlite:///{new / 'vbm.db'}", "config-restore", str(out))
    assert done.returncode == 0, done.stderr
    assert "files: vbm.toml.restored" in done.stdout
    assert (new / "vbm.toml").read_text() == 'log_level = "DEBUG"\n'
    assert (new / "vbm.toml.restored").read_text() == 'log_level = "WARNING"\n'
