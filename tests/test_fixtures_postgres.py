"""The database fixtures: a private PostgreSQL database per test, and SQLite + PostgreSQL runs."""

from __future__ import annotations

import pytest
from sqlalchemy import Integer, String, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tests.plugins import postgres as pg_plugin
from tests.plugins.postgres import database_exists, private_database


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vm: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20))


def test_postgres_url_is_a_private_psycopg_database(postgres_url: str) -> None:
    url = make_url(postgres_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.database is not None and url.database.startswith("vbm_test_")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == url.database
            version = conn.execute(text("SHOW server_version_num")).scalar_one()
            assert int(version) >= 120000
    finally:
        engine.dispose()


def test_round_trip_on_both_databases(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all([Job(vm="vm-1", state="queued"), Job(vm="vm-2 ünïcode", state="done")])
            session.commit()
        with Session(engine) as session:
            rows = session.execute(select(Job.vm, Job.state).order_by(Job.id)).all()
            assert [tuple(r) for r in rows] == [("vm-1", "queued"), ("vm-2 ünïcode", "done")]
            session.get_one(Job, 1).state = "running"
            session.commit()
        with engine.connect() as conn:
            state = conn.execute(text("SELECT state FROM jobs WHERE id = 1")).scalar_one()
            assert state == "running"
    finally:
        engine.dispose()


def test_each_test_starts_empty(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert not engine.dialect.has_table(conn, "jobs")
    finally:
        engine.dispose()


def test_database_is_dropped_afterwards_even_with_open_connections() -> None:
    with private_database() as url:
        name = make_url(url).database
        assert name is not None
        assert database_exists(name)
        engine = create_engine(url)
        conn = engine.connect()  # left open on purpose: the drop must terminate it
        conn.execute(text("CREATE TABLE t (x int)"))
        conn.commit()
    assert not database_exists(name)
    conn.invalidate()
    conn.close()
    engine.dispose()


def test_unreachable_server_fails_with_the_install_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "VBM_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2"
    )
    with pytest.raises(pytest.fail.Exception) as info, private_database():
        pass  # pragma: no cover
    message = str(info.value)
    assert "pg_ctlcluster --skip-systemctl-redirect" in message
    assert "make test" in message
    assert pg_plugin.admin_url().endswith(":1/postgres?connect_timeout=2")
