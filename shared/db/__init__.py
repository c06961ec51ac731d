"""The database: engine and sessions, the tables, and migrations (SQLite by default, PostgreSQL by URL)."""

from shared.db import audit as _audit  # noqa: F401 - registers the audit log on Base
from shared.db import eventlog as _eventlog  # noqa: F401 - the event log and its capture of changes
from shared.db import idempotency as _idempotency  # noqa: F401 - registers the idempotency keys on Base
from shared.db import objects as _objects  # noqa: F401 - registers the credential objects on Base
from shared.db import usage as _usage  # noqa: F401 - registers the usage tables on Base
from shared.db import users as _users  # noqa: F401 - registers the users tables on Base
from shared.db import work as _work  # noqa: F401 - registers the scheduling tables on Base
from shared.db.engine import make_engine, make_sessionmaker
from shared.db.migrate import SchemaNotCurrent, current_revision, head_revision, upgrade
from shared.db.models import Base, ServiceInstance

__all__ = [
    "Base",
    "SchemaNotCurrent",
    "ServiceInstance",
    "current_revision",
    "head_revision",
    "make_engine",
    "make_sessionmaker",
    "upgrade",
]
