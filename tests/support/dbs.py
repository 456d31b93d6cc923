"""Scratch databases for tests: one fresh, empty database per test on SQLite, PostgreSQL, MariaDB.

Server coordinates (the *admin* connection used to CREATE/DROP the scratch databases) come from
``HTD_TEST_PG_URL`` and ``HTD_TEST_MARIADB_URL``. Scratch databases are named ``htd_t_<hex>`` and
the URLs handed out are plain ``postgresql://...`` / ``mysql://...`` URLs meant to be passed to
``htd_pipelines.dialects.engine.create_engine`` / ``get_engine`` (which pick psycopg 3 / PyMySQL).
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

import psycopg
import pymysql
import pytest
from psycopg import sql as pgsql
from sqlalchemy.engine import URL, make_url

from htd_pipelines.dialects.engine import dispose_engines

DIALECTS = ("sqlite", "postgresql", "mariadb")
CONNECT_TIMEOUT_S = 2
DB_PREFIX = "htd_t_"

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MARIADB_URL = "mysql://root@127.0.0.1:3306/test"

_SCRATCH_NAME = re.compile(rf"^{DB_PREFIX}[0-9a-f]+$")


def pg_admin_url() -> URL:
    return make_url(os.environ.get("HTD_TEST_PG_URL") or DEFAULT_PG_URL)


def mariadb_admin_url() -> URL:
    return make_url(os.environ.get("HTD_TEST_MARIADB_URL") or DEFAULT_MARIADB_URL)


def dialect_of(url: str | URL) -> str:
    """``sqlite`` / ``postgresql`` / ``mariadb`` for a URL (mysql URLs count as mariadb)."""
    backend = make_url(url).get_backend_name()
    if backend in ("mysql", "mariadb"):
        return "mariadb"
    if backend in ("sqlite", "postgresql"):
        return backend
    raise ValueError(f"unsupported database URL backend: {backend!r}")


# ---------------------------------------------------------------------------- raw admin connections


def _pg_connect(url: URL, *, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        dbname=url.database or "postgres",
        connect_timeout=CONNECT_TIMEOUT_S,
        autocommit=autocommit,
    )


def _mariadb_connect(url: URL, *, read_timeout: float | None = None) -> pymysql.Connection:
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=url.database,
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=read_timeout,
        write_timeout=read_timeout,
        charset="utf8mb4",
        autocommit=True,
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def server_available(dialect: str) -> tuple[bool, str]:
    """Whether the server for ``dialect`` accepts connections (2 s timeout), and why not."""
    if dialect == "sqlite":
        return True, "sqlite is in-process"
    if dialect == "postgresql":
        url = pg_admin_url()
        where = f"PostgreSQL at {url.render_as_string(hide_password=True)} (HTD_TEST_PG_URL)"
        try:
            with _pg_connect(url) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # any failure means "not available"
            return False, f"{where} is not reachable: {_describe(exc)}"
        return True, f"{where} is reachable"
    if dialect == "mariadb":
        url = mariadb_admin_url()
        where = f"MariaDB at {url.render_as_string(hide_password=True)} (HTD_TEST_MARIADB_URL)"
        try:
            # read_timeout too: a peer that accepts TCP but never greets must not hang us.
            conn = _mariadb_connect(url, read_timeout=CONNECT_TIMEOUT_S)
            try:
                conn.ping(reconnect=False)
            finally:
                conn.close()
        except Exception as exc:
            return False, f"{where} is not reachable: {_describe(exc)}"
        return True, f"{where} is reachable"
    raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")


# ---------------------------------------------------------------------------- create / drop


def new_database(dialect: str, tmp_path: str | Path | None = None) -> str:
    """Create a new, empty database and return its SQLAlchemy URL (password included)."""
    name = DB_PREFIX + secrets.token_hex(6)
    if dialect == "sqlite":
        base = Path(tmp_path) if tmp_path is not None else Path(tempfile.mkdtemp(prefix=DB_PREFIX))
        base.mkdir(parents=True, exist_ok=True)
        path = (base / f"{name}.sqlite").resolve()
        return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)
    if dialect == "postgresql":
        admin = pg_admin_url()
        with _pg_connect(admin) as conn:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
        url = admin.set(drivername="postgresql", database=name)
        return url.render_as_string(hide_password=False)
    if dialect == "mariadb":
        admin = mariadb_admin_url()
        conn = _mariadb_connect(admin)
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        finally:
            conn.close()
        url = admin.set(drivername="mysql", database=name)
        return url.render_as_string(hide_password=False)
    raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")


def drop_database(url: str | URL) -> None:
    """Drop a scratch database made by :func:`new_database` (disposes cached engines first).

    Other sessions still connected to it are terminated (PostgreSQL ``WITH (FORCE)``, MariaDB
    ``KILL CONNECTION``) so a leaked connection or open transaction cannot hang the drop.
    """
    dispose_engines()
    u = make_url(url)
    dialect = dialect_of(u)
    if dialect == "sqlite":
        if u.database and u.database != ":memory:":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(u.database + suffix).unlink(missing_ok=True)
        return
    name = u.database or ""
    if not _SCRATCH_NAME.match(name):
        raise ValueError(f"refusing to drop {name!r}: not a scratch database ({DB_PREFIX}<hex>)")
    if dialect == "postgresql":
        admin = pg_admin_url()
        with _pg_connect(admin) as conn:
            conn.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
            )
        return
    admin = mariadb_admin_url()
    conn = _mariadb_connect(admin)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 10")
            cur.execute(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = %s AND id <> CONNECTION_ID()",
                (name,),
            )
            for (thread_id,) in cur.fetchall():
                try:
                    cur.execute(f"KILL CONNECTION {int(thread_id)}")
                except pymysql.err.OperationalError:
                    pass  # already gone
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


_AVAILABILITY: dict[str, tuple[bool, str]] = {}


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_server(dialect: str) -> None:
    """Skip (or, under CI, fail) the current test when ``dialect``'s server is unreachable."""
    if dialect not in _AVAILABILITY:
        _AVAILABILITY[dialect] = server_available(dialect)
    ok, reason = _AVAILABILITY[dialect]
    if ok:
        return
    if running_under_ci():
        pytest.fail(f"{dialect} server required under CI: {reason}", pytrace=False)
    pytest.skip(reason)
