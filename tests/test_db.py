"""Migrations and sessions on SQLite and PostgreSQL (the `db_url` fixture runs each test on both)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from shared.db import ServiceInstance, current_revision, head_revision, make_engine, make_sessionmaker
from shared.db.migrate import SchemaNotCurrent, _config, check_current, upgrade

ROOT = Path(__file__).resolve().parent.parent


def test_fresh_database_is_refused_until_upgraded(db_url: str) -> None:
    engine = make_engine(db_url)
    with pytest.raises(SchemaNotCurrent, match="run `vbm db upgrade`"):
        check_current(engine)
    upgrade(engine)
    check_current(engine)
    assert current_revision(engine) == head_revision()
    assert "service_instances" in inspect(engine).get_table_names()
    engine.dispose()


def test_rows_round_trip_with_aware_datetimes(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    started = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    with sessions.begin() as s:
        s.add(
            ServiceInstance(
                instance="i1",
                service="mover",
                host="h",
                pid=1,
                version="0",
                started_at=started,
                state="running",
            )
        )
    with sessions() as s:
        row = s.get(ServiceInstance, "i1")
        assert row is not None and row.service == "mover"
        assert row.started_at.replace(tzinfo=row.started_at.tzinfo or UTC) == started
    engine.dispose()


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(_config(conn), "base")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def _upgrade_in_child(url: str) -> str | None:
    engine = make_engine(url)
    upgrade(engine)
    rev = current_revision(engine)
    engine.dispose()
    return rev


def test_racing_starters_migrate_once(db_url: str) -> None:
    with ProcessPoolExecutor(4) as pool:
        revisions = list(pool.map(_upgrade_in_child, [db_url] * 4))
    assert revisions == [head_revision()] * 4


def test_vbm_db_cli(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env["VBM_DATA_DIR"] = str(tmp_path)
    run = [sys.executable, "-m", "shared.cli", "db"]
    status = subprocess.run([*run, "status"], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert status.returncode == 2 and f"no vbm database at {tmp_path / 'vbm.db'}" in status.stderr
    assert not (tmp_path / "vbm.db").exists()  # looking creates nothing
    up = subprocess.run([*run, "upgrade"], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert up.returncode == 0, up.stderr
    assert f"revision {head_revision()} (newest {head_revision()})" in up.stdout
    status = subprocess.run([*run, "status"], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert status.returncode == 0 and f"revision {head_revision()} (newest" in status.stdout


def test_models_match_the_migrations(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from shared.db import Base

    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []
    engine.dispose()


def test_vcenter_rows_mirror_the_settings_without_passwords(db_url: str) -> None:
    from shared.db.models import VCenterRow
    from shared.settings import Settings
    from shared.vsphere.pool import sync_rows

    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    vc = {"name": "vc1", "url": "https://vc1/sdk", "username": "u", "password": "secret"}
    now = datetime(2026, 11, 26, tzinfo=UTC)
    for vcs in ([vc, {**vc, "name": "vc2"}], [vc]):
        with sessions.begin() as s:
            sync_rows(s, Settings(vcenters=vcs), now)
    with sessions() as s:
        rows = s.query(VCenterRow).all()
        assert [(r.name, r.url, r.username) for r in rows] == [("vc1", "https://vc1/sdk", "u")]
        assert rows[0].password is None and rows[0].source == "config"
    engine.dispose()
