"""Engines for the application database: one place that knows each dialect's connection quirks,
how a table and its columns are named in SQL, and how a moment compares with a timestamp column."""

from __future__ import annotations

import datetime as dt
import os

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from htd_pipelines import settings
from htd_pipelines.dialects import sqlite
from htd_pipelines.registry.arrow_types import MYSQL_SPATIAL
from htd_pipelines.registry.resolved import TablePlan

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


def create_engine(url: str | URL) -> Engine:
    """A new engine with our conventions (foreign keys on in SQLite, UTC sessions)."""
    u = normalize_url(url)
    backend = u.get_backend_name()
    kwargs: dict = {"future": True}
    connect_s = max(1, round(settings.connect_timeout_s()))
    lock_s, statement_s = settings.lock_timeout_s(), settings.statement_timeout_s()
    if backend == "postgresql":
        # timeouts: a lock the application holds, a statement that never ends, a server or a
        # network that goes away (TCP keepalives: a dead peer is found within ~1 minute)
        kwargs["connect_args"] = {
            "options": f"-c timezone=UTC -c lock_timeout={round(lock_s * 1000)} "
            f"-c statement_timeout={round(statement_s * 1000)}",
            "connect_timeout": connect_s,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
    elif backend in ("mysql", "mariadb"):
        # local_infile: restores write with LOAD DATA LOCAL (mysql.py) unless the fast
        # paths are off (HTD_FAST_PATH=0)
        lock_whole = max(1, round(lock_s))
        kwargs["connect_args"] = {
            "init_command": "SET time_zone = '+00:00', "
            f"innodb_lock_wait_timeout = {lock_whole}, lock_wait_timeout = {lock_whole}",
            "local_infile": settings.fast_path_enabled(),
            "connect_timeout": connect_s,
            # the client gives up on a server that stops answering (PyMySQL socket timeouts)
            "read_timeout": statement_s or None,
            "write_timeout": statement_s or None,
        }
    engine = sa.create_engine(u, **kwargs)
    if backend == "sqlite":
        sqlite.configure(engine, busy_timeout_ms=round(lock_s * 1000))
    elif backend in ("mysql", "mariadb"):
        # spatial columns reflect as arrow_types.Geometry (carried as the server's bytes),
        # not as NullType; this engine's dialect only
        engine.dialect.ischema_names = {**engine.dialect.ischema_names, **MYSQL_SPATIAL}
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


def quoted(conn: Connection, tplan: TablePlan, names: list[str] | None = None) -> tuple[str, str]:
    """(table, comma-separated columns) of a table plan, quoted for `conn`'s dialect; all the
    plan's columns unless `names` are given."""
    prep = conn.dialect.identifier_preparer
    table = prep.format_table(tplan.table)
    columns = names or [c.name for c in tplan.columns]
    return table, ", ".join(prep.quote(n) for n in columns)


def comparable_timestamp(
    engine: Engine | Connection, column_type: sa.types.TypeEngine, moment: dt.datetime
) -> dt.datetime:
    """`moment` (aware) as it compares with a column of `column_type`: aware where the dialect
    keeps the zone (PostgreSQL's timestamptz), naive UTC everywhere else (our sessions run in
    UTC)."""
    if engine.dialect.name == "postgresql" and getattr(column_type, "timezone", False):
        return moment
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def database_identity(engine: Engine) -> tuple[str, ...]:
    """What makes a database the same database whatever its URL says (`localhost` and
    `127.0.0.1`, another user, a DNS alias): PostgreSQL's cluster system identifier and the
    database name; MariaDB/MySQL's `@@server_uuid` where there is one (MySQL), else its host
    name, port and data directory, and the database name; SQLite's resolved file path."""
    name = engine.dialect.name
    if name == "sqlite":
        path = engine.url.database or ""
        return (
            name,
            os.path.realpath(path) if path and path != ":memory:" else f"memory:{id(engine)}",
        )
    with engine.connect() as conn:
        if name == "postgresql":
            sql = (
                "SELECT CAST((SELECT system_identifier FROM pg_control_system()) AS text), "
                "current_database()"
            )
        else:
            server = conn.exec_driver_sql("SHOW VARIABLES LIKE 'server_uuid'").first()
            sql = (
                f"SELECT '{server[1]}', DATABASE()"
                if server
                else "SELECT CONCAT_WS(':', @@hostname, @@port, @@datadir), DATABASE()"
            )
        row = conn.exec_driver_sql(sql).one()
    return (name, str(row[0]), str(row[1]))


def same_database(a: Engine, b: Engine) -> bool:
    """Whether two engines reach the same database (see database_identity)."""
    if a.url == b.url:
        return True
    if a.dialect.name != b.dialect.name:
        return False
    return database_identity(a) == database_identity(b)
