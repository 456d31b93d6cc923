"""SQLite's connection conventions: real transactions and SAVEPOINTs, foreign keys on."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry


def _pragmas(busy_timeout_ms: int) -> Callable[[DBAPIConnection, ConnectionPoolEntry], None]:
    def on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # SQLAlchemy's recipe for real SQLite transactions and SAVEPOINTs under pysqlite:
        # pysqlite's own implicit BEGIN is switched off, and we emit BEGIN ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")  # the lock timeout
        cur.close()

    return on_connect


def configure(engine: Engine, busy_timeout_ms: int = 30_000) -> None:
    """Install the conventions on a new SQLite engine."""
    sa.event.listen(engine, "connect", _pragmas(busy_timeout_ms))
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
