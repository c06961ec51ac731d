"""Copies of vbm's database for a configuration backup, and putting them back.

SQLite is copied whole with SQLite's online backup API (a consistent copy while services write).
PostgreSQL is dumped as rows: every table of the database (reflected, so tables added by newer
modules come too; `alembic_version` aside, its revision goes in the manifest) in dependency order,
one JSON line each, read in one REPEATABLE READ transaction (a consistent snapshot). Rows load
into an empty schema at the same revision, on SQLite or PostgreSQL, which is then migrated to the
newest; a SQLite copy restores onto PostgreSQL the same way (its rows read from the copy).
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Date, DateTime, Engine, Integer, LargeBinary, MetaData, select, text
from sqlalchemy.engine import make_url

SKIP = {"alembic_version"}
BATCH = 500


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API, page by page)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=1024)
    finally:
        dst.close()
        src.close()


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Decimal):
        return str(value)
    return value


def dump_rows(engine: Engine, out: IO[str]) -> dict[str, int]:
    """Every row of every table to `out` as JSON lines ({"t": table, "r": {column: value}}), parents
    before children; returns the row count of each table."""
    meta = MetaData()
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        if engine.url.get_backend_name() == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            meta.reflect(conn)
            for table in meta.sorted_tables:
                if table.name in SKIP:
                    continue
                counts[table.name] = 0
                order = list(table.primary_key.columns) or list(table.columns)
                for row in conn.execute(select(table).order_by(*order)).mappings():
                    line = {"t": table.name, "r": {k: _encode(v) for k, v in row.items()}}
                    out.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
                    counts[table.name] += 1
    return counts


def _decoder(column_type: Any) -> Any:
    if isinstance(column_type, DateTime):
        aware = bool(getattr(column_type, "timezone", False))

        def when(v: str) -> datetime:
            value = datetime.fromisoformat(v)
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value if aware else value.astimezone(UTC).replace(tzinfo=None)

        return when
    if isinstance(column_type, Date):
        return date.fromisoformat
    if isinstance(column_type, LargeBinary):
        return base64.b64decode
    return None


def load_rows(engine: Engine, lines: Iterator[str]) -> dict[str, int]:
    """Insert dumped rows into the (empty) tables of `engine`, in one transaction."""
    meta = MetaData()
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        meta.reflect(conn)
        decoders = {
            (t.name, c.name): d for t in meta.tables.values() for c in t.columns if (d := _decoder(c.type))
        }
        batch: list[dict[str, Any]] = []
        current = ""
        for raw in lines:
            item = json.loads(raw)
            name, row = item["t"], item["r"]
            if name not in meta.tables:
                raise ValueError(f"the backup holds rows of a table {name!r} this database lacks")
            if name != current and batch:
                conn.execute(meta.tables[current].insert(), batch)
                batch = []
            current = name
            for column, value in row.items():
                decode = decoders.get((name, column))
                if decode is not None and value is not None:
                    row[column] = decode(value)
            batch.append(row)
            counts[name] = counts.get(name, 0) + 1
            if len(batch) >= BATCH:
                conn.execute(meta.tables[current].insert(), batch)
                batch = []
        if batch:
            conn.execute(meta.tables[current].insert(), batch)
        if engine.url.get_backend_name() == "postgresql":
            _reset_sequences(conn, meta)
    return counts


def _reset_sequences(conn: Connection, meta: MetaData) -> None:
    """Serial keys continue after the restored rows (PostgreSQL does not see inserted ids)."""
    for table in meta.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer):
            continue
        conn.execute(
            text(
                "SELECT setval(pg_get_serial_sequence(:t, :c), COALESCE(MAX({c}), 1), MAX({c}) IS NOT NULL)"
                " FROM {t}".format(c=f'"{keys[0].name}"', t=f'"{table.name}"')
            ),
            {"t": table.name, "c": keys[0].name},
        )


def drop_everything(engine: Engine) -> None:
    """Empty a database for `--force`: every table, alembic's too."""
    meta = MetaData()
    with engine.begin() as conn:
        meta.reflect(conn)
        meta.drop_all(conn)


def has_tables(engine: Engine) -> bool:
    meta = MetaData()
    with engine.connect() as conn:
        meta.reflect(conn)
    return bool(meta.tables)


def counts(engine: Engine) -> dict[str, int]:
    """Rows of what a person recognises: jobs, restore points, users (when the table exists)."""
    meta = MetaData()
    found: dict[str, int] = {}
    with engine.connect() as conn:
        meta.reflect(conn)
        for name in ("jobs", "restore_points", "runs", "users", "api_keys"):
            if name in meta.tables:
                found[name] = int(conn.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one())
    return found


__all__ = ["counts", "drop_everything", "dump_rows", "has_tables", "load_rows", "sqlite_copy"]
