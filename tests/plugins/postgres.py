"""A private PostgreSQL database per test, and ``db_url`` to run a test on SQLite and PostgreSQL.

The server is the machine's PostgreSQL (``VBM_TEST_PG_ADMIN_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``); each test gets ``CREATE DATABASE
vbm_test_<hex>``, dropped afterwards (its connections terminated first). The URL handed out is a
SQLAlchemy URL for psycopg 3 (``postgresql+psycopg://...``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tests.plugins.procs import fail_missing

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DEFAULT_ADMIN_URL",
    "PG_START_HINT",
    "admin_url",
    "database_exists",
    "private_database",
]

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_START_HINT = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
    "or run `make test`, which installs and starts Debian's postgresql; "
    "or point VBM_TEST_PG_ADMIN_URL at a server where this user may CREATE DATABASE"
)
PSYCOPG_HINT = (
    "run `make test`, which installs the dev dependencies into .venv "
    "(`.venv/bin/pip install -e '.[dev]'`, including `psycopg[binary]`)"
)


def admin_url() -> str:
    """libpq URL of the maintenance database used to create and drop test databases."""
    return os.environ.get("VBM_TEST_PG_ADMIN_URL") or DEFAULT_ADMIN_URL


def _admin_connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection to the admin database, or fail naming how to get a server."""
    try:
        import psycopg
    except ImportError as exc:  # imported lazily so only database tests fail without it
        fail_missing(f"psycopg (v3) is not importable ({exc}): {PSYCOPG_HINT}")
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        fail_missing(f"PostgreSQL at {_redacted(url)} is unreachable ({exc}): {PG_START_HINT}")


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def database_exists(name: str, url: str | None = None) -> bool:
    """True if database ``name`` exists on the admin server."""
    with _admin_connect(url or admin_url()) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None


@contextlib.contextmanager
def private_database(url: str | None = None) -> Iterator[str]:
    """Create ``vbm_test_<hex>`` on the admin server; yield its SQLAlchemy (psycopg) URL; drop it.

    The drop terminates the database's remaining connections first (a leaked engine cannot
    keep it alive).
    """
    admin = url or admin_url()
    name = f"vbm_test_{uuid.uuid4().hex[:16]}"
    with _admin_connect(admin) as conn:
        from psycopg import sql  # after _admin_connect, which fails clearly without psycopg

        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield (
            make_url(admin)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with _admin_connect(admin) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database of this test's own, dropped afterwards."""
    with private_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test runs twice: on a fresh SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vbm.db'}"
    else:
        with private_database() as url:
            yield url


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on `db_url` (SQLite, then PostgreSQL) with the current schema."""
    from shared.db import make_engine, make_sessionmaker, upgrade

    engine = make_engine(db_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()
