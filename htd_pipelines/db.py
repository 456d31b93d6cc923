"""Engines for the application database: one place that knows each dialect's connection quirks."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from htd_pipelines.extract import fast_path_enabled

_ENGINES: dict[str, Engine] = {}


def normalize_url(url: str | URL) -> URL:
    """Pick the drivers we ship: psycopg 3 for PostgreSQL, PyMySQL for MariaDB/MySQL."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername in ("mysql", "mariadb"):
        u = u.set(drivername=f"{u.drivername}+pymysql")
    if u.get_backend_name() in ("mysql", "mariadb") and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    # SQLAlchemy's recipe for real SQLite transactions and SAVEPOINTs under pysqlite:
    # pysqlite's own implicit BEGIN is switched off, and we emit BEGIN ourselves.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def create_engine(url: str | URL) -> Engine:
    """A new engine with our conventions (foreign keys on in SQLite, UTC sessions)."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    kwargs: dict = {"future": True}
    if backend == "postgresql":
        kwargs["connect_args"] = {"options": "-c timezone=UTC"}
    elif backend in ("mysql", "mariadb"):
        # local_infile: restores write with LOAD DATA LOCAL (load_mysql.py) unless the fast
        # paths are off (HTD_FAST_PATH=0)
        kwargs["connect_args"] = {
            "init_command": "SET time_zone = '+00:00'",
            "local_infile": fast_path_enabled(),
        }
    engine = sa.create_engine(u, **kwargs)
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    return engine


def get_engine(url: str | URL) -> Engine:
    """A process-wide cached engine per URL (connection pools are reused across ops)."""
    key = normalize_url(url).render_as_string(hide_password=False)
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _ENGINES[key] = create_engine(key)
    return engine


def dispose_engines() -> None:
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
