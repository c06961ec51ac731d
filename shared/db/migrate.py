"""Schema migrations with Alembic, run from code (`vbm db upgrade`, or on service start).

Concurrent starters are serialised: PostgreSQL by an advisory lock, SQLite by a file lock beside
the database, so six services starting at once migrate exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, text

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
PG_LOCK_KEY = 0x76626D  # "vbm"


class SchemaNotCurrent(Exception):
    """The database is not at the revision this code needs; the message says what to run."""


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def knows_revision(revision: str) -> bool:
    """Whether this vbm's migrations hold `revision` (a database from a newer vbm: not)."""
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except (ResolutionError, CommandError):
        return False


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`, once, even with several processes racing."""
    with _migration_lock(engine), engine.begin() as conn:
        command.upgrade(_config(conn), revision)


def check_current(engine: Engine) -> None:
    have, want = current_revision(engine), head_revision()
    if have != want:
        raise SchemaNotCurrent(
            f"database {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{have or 'none'}, this vbm needs {want}: run `vbm db upgrade`"
        )


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
    elif backend == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock_path = Path(str(engine.url.database)).with_suffix(".migrate.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield
