"""Writing snapshot rows back inside one open transaction: the one interface of every dialect.

`insert_rows` puts an Arrow table into a database table on the caller's connection (so the
caller's transaction covers it); `read_rows` reads a session's rows back in that same
transaction, in snapshot schema. The fast paths live with their dialect (postgresql.py: COPY
binary/csv; mysql.py: LOAD DATA LOCAL INFILE); the portable fallback, used by SQLite and by
every dialect with HTD_FAST_PATH=0, is batched executemany INSERTs and a server-side cursor.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from htd_pipelines import settings
from htd_pipelines.dialects import mysql, postgresql
from htd_pipelines.dialects.arrow_rows import output_schema, rel_arrow_type, rows_to_batch
from htd_pipelines.dialects.engine import quoted
from htd_pipelines.dialects.postgresql import SentRows
from htd_pipelines.dialects.read import stream_batches
from htd_pipelines.registry.arrow_types import TAGGED, untag
from htd_pipelines.registry.resolved import REL_COLUMN, TablePlan

INSERT_BATCH_ROWS = 5_000


def use_copy(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql" and settings.fast_path_enabled()


def _python_rows(table: pa.Table, tagged: frozenset[str] = frozenset()) -> Iterator[list[dict]]:
    """Rows as the driver binds them; `tagged` columns (SQLite) as the value of their tag."""
    for batch in table.to_batches(max_chunksize=INSERT_BATCH_ROWS):
        rows = batch.to_pylist()
        for name in tagged:
            for row in rows:
                row[name] = untag(row[name])
        yield rows


def _executemany(conn: Connection, tplan: TablePlan, table: pa.Table) -> None:
    names = table.column_names
    always = [c for c in names if (i := tplan.table.c[c].identity) is not None and i.always is True]
    if always and conn.dialect.name == "postgresql":
        # GENERATED ALWAYS AS IDENTITY takes a given value only when told to
        name, cols = quoted(conn, tplan, names)
        marks = ", ".join(f":p{i}" for i in range(len(names)))
        stmt = sa.text(f"INSERT INTO {name} ({cols}) OVERRIDING SYSTEM VALUE VALUES ({marks})")
        for rows in _python_rows(table):
            conn.execute(stmt, [{f"p{i}": r[n] for i, n in enumerate(names)} for r in rows])
        return
    # A plain table clause: values go to the driver as they are (JSON stays its text).
    target = sa.table(tplan.table.name, *[sa.column(n) for n in names], schema=tplan.table.schema)
    tagged = frozenset(c.name for c in tplan.columns if c.kind == TAGGED and c.name in names)
    for rows in _python_rows(table, tagged):
        if rows:
            conn.execute(target.insert(), rows)


def _writable(tplan: TablePlan, table: pa.Table) -> pa.Table:
    """The snapshot's columns the database takes on insert: generated (computed) columns are
    left to the database, which recomputes them (the read-back then compares them too)."""
    computed = [n for n in table.column_names if tplan.table.c[n].computed is not None]
    return table.drop_columns(computed) if computed else table


def insert_rows(conn: Connection, tplan: TablePlan, table: pa.Table) -> SentRows | None:
    """Insert every row of `table` (snapshot schema) into the plan's table, keys included.

    Returns what a binary COPY sent when every column of the snapshot was sent that way (for
    `same_as_sent`); None otherwise (the read-back then compares decoded values)."""
    if table.num_rows == 0:
        return None
    writable = _writable(tplan, table)
    sent = None
    if use_copy(conn):
        sent = postgresql.copy_in(conn, tplan, writable)
        if writable.num_columns != table.num_columns:  # generated columns: compare decoded
            sent = None
    elif settings.fast_path_enabled() and mysql.available(conn):
        mysql.load_data(conn, tplan, writable)
    else:
        _executemany(conn, tplan, writable)
    if conn.dialect.name == "postgresql":
        postgresql.advance_sequences(conn, tplan)
        postgresql.refresh_statistics(conn, tplan, table.num_rows)
    return sent



def same_as_sent(conn: Connection, tplan: TablePlan, ids: list, sent: SentRows) -> bool:
    """Whether the sessions' rows now in the table are byte for byte what `insert_rows` sent
    (`sent` is what it returned: only a fast path that can tell returns one)."""
    return postgresql.same_as_sent(conn, tplan, ids, sent)


def read_rows(conn: Connection, tplan: TablePlan, ids: list) -> pa.Table:
    """The sessions' rows of the plan's table as seen inside `conn`'s transaction."""
    if use_copy(conn):
        table = postgresql.copy_out(conn, tplan, ids)
    else:
        schema = output_schema(tplan, rel_arrow_type(tplan))
        batches = list(stream_batches(conn.engine, tplan, ids, conn=conn))
        table = pa.Table.from_batches(batches, schema=schema)
    return table.drop_columns([REL_COLUMN])


def delete_rows(conn: Connection, tplan: TablePlan, ids: list) -> pa.Table:
    """Delete the sessions' rows of the plan's table inside `conn`'s transaction and return
    them as they were, in snapshot schema (`DELETE ... RETURNING`, read by a path of its own:
    on PostgreSQL COPY csv parsed by Arrow, elsewhere the driver's rows)."""
    if use_copy(conn):
        return postgresql.delete_returning(conn, tplan, ids)
    rows = conn.execute(tplan.delete_returning(), {"ids": ids}).fetchall()
    return pa.Table.from_batches([rows_to_batch(rows, tplan.arrow_schema())])
