"""Opening the database of a running vbm from the command line: never a new, empty one.

`vbm up` (and `vbm db upgrade`) create the database; every other command opens the one that is
there. A command run in another directory, or without `vbm up`'s `VBM_DATA_DIR`, used to create a
fresh `./var/vbm.db` silently and act on it (an API key the gateway then refused, a job nobody
runs): it now stops and says where it looked and how to point it at the running system.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from shared.db.engine import make_engine
from shared.db.migrate import current_revision, head_revision, upgrade

HOW = (
    "Run vbm in the directory `vbm up` runs in, or tell it the data directory `vbm up` printed"
    " (VBM_DATA_DIR=<that directory> vbm ...), or its database (VBM_DATABASE_URL)."
)


class NoDatabase(Exception):
    """There is no vbm database where the settings point; the message says where and what to do."""


def open_existing(url: str, data_dir: Path, *, migrate: bool = True) -> Engine:
    """An engine on the existing vbm database at `url`; NoDatabase when there is none (nothing
    is created). With `migrate`, an older schema is brought up to date, as services do on start."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(str(parsed.database))
        if not path.is_file():
            raise NoDatabase(
                f"no vbm database at {path} (data directory {data_dir.resolve()}): vbm up has not run"
                f" with this data directory. {HOW}"
            )
    engine = make_engine(url)
    try:
        have = current_revision(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        where = parsed.render_as_string(hide_password=True)
        raise NoDatabase(f"cannot open the database {where}: {exc.args[0] if exc.args else exc}") from None
    if have is None:
        engine.dispose()
        where = parsed.render_as_string(hide_password=True)
        raise NoDatabase(f"the database {where} holds no vbm schema: is it the one vbm up uses? {HOW}")
    if migrate and have != head_revision():
        upgrade(engine)
    return engine
