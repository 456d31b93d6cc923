"""The third-party Chinook sample database (v1.4.5, MIT) as a realistic fixture on every dialect.

``load_chinook(url)`` fills an empty database (from ``dbs.new_database``) with the 11 Chinook
tables, their data, primary and foreign keys and indexes. The three upstream scripts are loaded
with these deliberate deviations, so the *data* is identical on all dialects:

* PostgreSQL and MariaDB: the ``N'...'`` (national character) prefix of string literals is
  dropped. In PostgreSQL ``N'x '`` is a ``bpchar`` whose trailing spaces are stripped when stored
  in a ``varchar`` (``'Edinburgh '`` would become ``'Edinburgh'``); in MariaDB it is a utf8mb3
  literal.
* MariaDB: ``NVARCHAR`` columns become ``VARCHAR`` so they inherit the database's
  ``utf8mb4``/``utf8mb4_bin`` (NVARCHAR would force ``utf8mb3_general_ci``, case-insensitive),
  and the script runs with ``NO_BACKSLASH_ESCAPES`` so ``'Rusticana \\ Act'`` keeps its
  backslashes as in the other dialects.
* Database-level lines (``DROP/CREATE DATABASE``, ``USE``, ``\\c``) are skipped: the given
  database is used.

Identifiers differ: PostgreSQL uses snake_case (``invoice_line.invoice_id``), SQLite and MariaDB
use CamelCase (``InvoiceLine.InvoiceId``); see ``CHINOOK_NAMES``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from htd_pipelines.dialects.engine import create_engine

CHINOOK_FILES = {
    "sqlite": "Chinook_Sqlite.sql",
    "postgresql": "Chinook_PostgreSql.sql",
    "mariadb": "Chinook_MySql.sql",
}

# Documented row counts (README of the dataset), by logical (snake_case) table name.
CHINOOK_ROW_COUNTS: dict[str, int] = {
    "album": 347,
    "artist": 275,
    "customer": 59,
    "employee": 8,
    "genre": 25,
    "invoice": 412,
    "invoice_line": 2240,
    "media_type": 5,
    "playlist": 18,
    "playlist_track": 8715,
    "track": 3503,
}

_CAMEL_TABLES = {
    "album": "Album",
    "artist": "Artist",
    "customer": "Customer",
    "employee": "Employee",
    "genre": "Genre",
    "invoice": "Invoice",
    "invoice_line": "InvoiceLine",
    "media_type": "MediaType",
    "playlist": "Playlist",
    "playlist_track": "PlaylistTrack",
    "track": "Track",
}
_CAMEL_COLUMNS = {
    "album_id": "AlbumId",
    "artist_id": "ArtistId",
    "customer_id": "CustomerId",
    "employee_id": "EmployeeId",
    "genre_id": "GenreId",
    "invoice_id": "InvoiceId",
    "invoice_line_id": "InvoiceLineId",
    "media_type_id": "MediaTypeId",
    "playlist_id": "PlaylistId",
    "track_id": "TrackId",
    "support_rep_id": "SupportRepId",
    "reports_to": "ReportsTo",
    "invoice_date": "InvoiceDate",
    "unit_price": "UnitPrice",
    "quantity": "Quantity",
    "total": "Total",
}
_CAMEL = {**_CAMEL_TABLES, **_CAMEL_COLUMNS}

# dialect -> logical (snake_case) name -> actual identifier in that dialect's Chinook.
CHINOOK_NAMES: dict[str, dict[str, str]] = {
    "postgresql": {k: k for k in _CAMEL},
    "sqlite": dict(_CAMEL),
    "mariadb": dict(_CAMEL),
}


def chinook_dir() -> Path:
    """The vendored copy (tests/data/chinook, MIT licence: LICENSE.md beside the files)."""
    return Path(__file__).resolve().parents[1] / "data" / "chinook"


def chinook_relations_yaml(dialect: str) -> str:
    """Registry YAML: type ``customer`` = customer -> invoice -> invoice_line."""
    n = CHINOOK_NAMES[dialect]
    return (
        "types:\n"
        "  customer:\n"
        f"    root: {{table: {n['customer']}, key: {n['customer_id']}}}\n"
        "    tables:\n"
        f"      - {{table: {n['invoice']}, key: {n['customer_id']}}}\n"
        f"      - {{table: {n['invoice_line']}, key: {n['invoice_id']}, parent: {n['invoice']}}}\n"
    )


# ---------------------------------------------------------------------------- script handling

# Whole-line statements that act on the database itself (we load into the given database).
_SKIP_LINE = re.compile(
    r"^[ \t]*(?:DROP[ \t]+DATABASE\b|CREATE[ \t]+DATABASE\b|USE[ \t]|\\c(?:onnect)?[ \t])[^\n]*\n?",
    re.IGNORECASE | re.MULTILINE,
)

# Lexical pieces that may hide a ';' or must be left alone. Standard-SQL quoting only ('' inside
# a literal): the PostgreSQL file relies on standard_conforming_strings, MariaDB is loaded with
# NO_BACKSLASH_ESCAPES.
_LEXEME = re.compile(
    r"""
      (?P<str>'[^']*(?:''[^']*)*')
    | (?P<ident>"[^"]*(?:""[^"]*)*"|`[^`]*(?:``[^`]*)*`)
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<semi>;)
    """,
    re.DOTALL | re.VERBOSE,
)
_NVARCHAR = re.compile(r"\bNVARCHAR\b", re.IGNORECASE)
_WORD_CHAR = re.compile(r"\w")


def read_script(dialect: str) -> str:
    """The upstream script for ``dialect`` (BOM removed, database-level lines removed)."""
    path = chinook_dir() / CHINOOK_FILES[dialect]
    text = path.read_text(encoding="utf-8-sig").lstrip("\ufeff")
    return _SKIP_LINE.sub("", text)


def split_statements(script: str, *, dialect: str) -> list[str]:
    """Split ``script`` on top-level ``;``, dropping comments.

    String literals are respected (``'a;b'``, ``'Guns N'' Roses'``). For PostgreSQL/MariaDB the
    ``N`` national-character prefix of literals is removed, and for MariaDB ``NVARCHAR`` outside
    literals becomes ``VARCHAR`` (see the module docstring).
    """
    strip_n = dialect in ("postgresql", "mariadb")
    fix_nvarchar = dialect == "mariadb"
    statements: list[str] = []
    current: list[str] = []
    pos = 0

    def code(chunk: str) -> str:
        return _NVARCHAR.sub("VARCHAR", chunk) if fix_nvarchar else chunk

    for m in _LEXEME.finditer(script):
        start = m.start()
        before = script[pos:start]
        kind = m.lastgroup
        if (
            kind == "str"
            and strip_n
            and before[-1:] in ("N", "n")
            and not _WORD_CHAR.match(script[start - 2 : start - 1] or " ")
        ):
            before = before[:-1]
        current.append(code(before))
        if kind == "str" or kind == "ident":
            current.append(m.group())
        elif kind == "comment":
            current.append(" ")
        else:  # ';'
            stmt = "".join(current).strip()
            if stmt:
                statements.append(stmt)
            current = []
        pos = m.end()
    current.append(code(script[pos:]))
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


# ---------------------------------------------------------------------------- loading


def load_chinook(url: str) -> None:
    """Load Chinook (schema, data, keys, indexes) into the empty database at ``url``."""
    u = make_url(url)
    backend = u.get_backend_name()
    dialect = "mariadb" if backend in ("mysql", "mariadb") else backend
    if dialect not in CHINOOK_FILES:
        raise ValueError(f"unsupported dialect for Chinook: {backend!r}")
    script = read_script(dialect)
    engine = create_engine(url)
    try:
        dbapi_conn = engine.raw_connection()
        try:
            if dialect == "sqlite":
                # The file is plain SQLite; one transaction makes it fast.
                dbapi_conn.commit()
                dbapi_conn.executescript(f"BEGIN;\n{script}\nCOMMIT;")
            elif dialect == "postgresql":
                # One simple-protocol round trip (no parameters => several statements allowed).
                body = ";\n".join(split_statements(script, dialect=dialect))
                cur = dbapi_conn.cursor()
                cur.execute(body)
                cur.close()
                dbapi_conn.commit()
            else:
                cur = dbapi_conn.cursor()
                cur.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
                for stmt in split_statements(script, dialect=dialect):
                    cur.execute(stmt)
                cur.close()
                dbapi_conn.commit()
        finally:
            dbapi_conn.close()
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- inspection


def table_counts(url: str) -> dict[str, int]:
    """Row count of every table, by actual table name."""
    engine = create_engine(url)
    try:
        prep = engine.dialect.identifier_preparer
        with engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {
                name: conn.exec_driver_sql(f"SELECT COUNT(*) FROM {prep.quote(name)}").scalar_one()
                for name in names
            }
    finally:
        engine.dispose()


def snapshot_database(url: str, exclude: Iterable[str] = ()) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (all columns, in table column order) sorted by primary key.

    Values are exactly what the DB driver returns (no SQLAlchemy type processing), so a change of
    storage representation (e.g. SQLite ``'2021-01-01 00:00:00'`` vs ``'2021-01-01T00:00:00'``,
    or int vs float) shows up in a before/after comparison. Tables without a primary key are
    sorted by all columns. Tables named in ``exclude`` are left out.
    """
    skip = set(exclude)
    engine = create_engine(url)
    try:
        prep = engine.dialect.identifier_preparer
        snapshot: dict[str, list[tuple[Any, ...]]] = {}
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            for name in sorted(insp.get_table_names()):
                if name in skip:
                    continue
                columns = [c["name"] for c in insp.get_columns(name)]
                order = insp.get_pk_constraint(name).get("constrained_columns") or columns
                query = "SELECT {} FROM {} ORDER BY {}".format(
                    ", ".join(prep.quote(c) for c in columns),
                    prep.quote(name),
                    ", ".join(prep.quote(c) for c in order),
                )
                snapshot[name] = [tuple(row) for row in conn.exec_driver_sql(query)]
        return snapshot
    finally:
        engine.dispose()
