"""Writing snapshot rows back inside one open transaction: one interface, a fast path per dialect.

`insert_rows` puts an Arrow table into a database table on the caller's connection (so the
caller's transaction covers it); `read_rows` reads a session's rows back in that same
transaction, in snapshot schema. PostgreSQL uses `COPY ... FROM STDIN (FORMAT csv)` fed by
Arrow's C++ CSV writer, and `COPY (SELECT ...) TO STDOUT` parsed by Arrow's CSV reader; other
dialects (and PostgreSQL with HTD_FAST_PATH=0) use batched executemany INSERTs and a
server-side cursor.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from htd_pipelines.extract import fast_path_enabled, output_schema, rel_arrow_type, stream_batches
from htd_pipelines.plan import REL_COLUMN, TablePlan

INSERT_BATCH_ROWS = 5_000
COPY_CHUNK_ROWS = 200_000


def use_copy(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql" and fast_path_enabled()


def _quote(conn: Connection, tplan: TablePlan) -> tuple[str, str]:
    prep = conn.dialect.identifier_preparer
    table = prep.format_table(tplan.table)
    cols = ", ".join(prep.quote(c.name) for c in tplan.columns)
    return table, cols


def _csv_ready(table: pa.Table) -> pa.Table:
    """Columns in the text form PostgreSQL's COPY csv reads (bytea as \\x hex)."""
    arrays = []
    for col in table.columns:
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            values = [None if v is None else "\\x" + v.hex() for v in col.to_pylist()]
            col = pa.array(values, pa.string())
        arrays.append(col)
    return pa.Table.from_arrays(arrays, names=table.column_names)


def _copy_in(conn: Connection, tplan: TablePlan, table: pa.Table) -> None:
    name, cols = _quote(conn, tplan)
    raw = conn.connection.driver_connection
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    with raw.cursor() as cur, cur.copy(f"COPY {name} ({cols}) FROM STDIN (FORMAT csv)") as copy:
        for start in range(0, table.num_rows, COPY_CHUNK_ROWS):
            buf = io.BytesIO()
            pacsv.write_csv(_csv_ready(table.slice(start, COPY_CHUNK_ROWS)), buf, options)
            copy.write(buf.getbuffer())


def _python_rows(table: pa.Table) -> Iterator[list[dict]]:
    for batch in table.to_batches(max_chunksize=INSERT_BATCH_ROWS):
        yield batch.to_pylist()


def _executemany(conn: Connection, tplan: TablePlan, table: pa.Table) -> None:
    # A plain table clause: values go to the driver as they are (JSON stays its text).
    target = sa.table(
        tplan.table.name, *[sa.column(c.name) for c in tplan.columns], schema=tplan.table.schema
    )
    for rows in _python_rows(table):
        if rows:
            conn.execute(target.insert(), rows)


def insert_rows(conn: Connection, tplan: TablePlan, table: pa.Table) -> None:
    """Insert every row of `table` (snapshot schema) into the plan's table, keys included."""
    if table.num_rows == 0:
        return
    if use_copy(conn):
        _copy_in(conn, tplan, table)
    else:
        _executemany(conn, tplan, table)
    if conn.dialect.name == "postgresql":
        _advance_sequences(conn, tplan)


def _advance_sequences(conn: Connection, tplan: TablePlan) -> None:
    """Serial/identity sequences must not hand out the keys that were just restored."""
    prep = conn.dialect.identifier_preparer
    name = prep.format_table(tplan.table)
    for col in tplan.table.columns:
        if not isinstance(col.type, sa.Integer):
            continue
        seq = conn.execute(
            sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
            {"t": name, "c": col.name},
        ).scalar()
        if seq:
            conn.execute(
                sa.text(
                    f"SELECT setval(:s, m) FROM (SELECT max({prep.quote(col.name)}) AS m "
                    f"FROM {name}) x WHERE m IS NOT NULL AND m > "
                    "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
                    f"FROM {seq})"
                ),
                {"s": seq},
            )


def _copy_out(conn: Connection, tplan: TablePlan, ids: list) -> pa.Table:
    schema = output_schema(tplan, rel_arrow_type(tplan))
    stmt = tplan.select_rows().params(ids=ids)
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    raw = conn.connection.driver_connection
    buf = io.BytesIO()
    with raw.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        for chunk in copy:
            buf.write(chunk)
    binary = {f.name for f in schema if pa.types.is_binary(f.type)}
    read_types = {f.name: (pa.string() if f.name in binary else f.type) for f in schema}
    if buf.tell() == 0:
        return schema.empty_table()
    buf.seek(0)
    table = pacsv.read_csv(
        buf,
        read_options=pacsv.ReadOptions(column_names=schema.names, block_size=16 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=read_types,
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    arrays = []
    for field in schema:
        col = table.column(field.name)
        if field.name in binary:
            values = [None if v is None else bytes.fromhex(v[2:]) for v in col.to_pylist()]
            col = pa.chunked_array([pa.array(values, pa.binary())])
        arrays.append(col.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def read_rows(conn: Connection, tplan: TablePlan, ids: list) -> pa.Table:
    """The sessions' rows of the plan's table as seen inside `conn`'s transaction."""
    if use_copy(conn):
        table = _copy_out(conn, tplan, ids)
    else:
        schema = output_schema(tplan, rel_arrow_type(tplan))
        batches = list(stream_batches(conn.engine, tplan, ids, conn=conn))
        table = pa.Table.from_batches(batches, schema=schema)
    return table.drop_columns([REL_COLUMN])


def sort_by_key(table: pa.Table, key: list[str]) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in key]) if table.num_rows else table


def differences(
    expected: pa.Table, actual: pa.Table, key: list[str], limit: int = 20
) -> list[tuple[dict, str, object, object]]:
    """(key, column, expected, actual) for cells that differ; both tables sorted by key."""
    out: list[tuple[dict, str, object, object]] = []
    if expected.num_rows != actual.num_rows:
        return [({}, "*", expected.num_rows, actual.num_rows)]
    for name in expected.column_names:
        a, b = expected.column(name), actual.column(name)
        if a.equals(b):
            continue
        same = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        bad = pc.indices_nonzero(pc.invert(pc.or_(same, both_null)))
        for i in bad.to_pylist():
            out.append(
                (
                    {k: expected.column(k)[i].as_py() for k in key},
                    name,
                    a[i].as_py(),
                    b[i].as_py(),
                )
            )
            if len(out) >= limit:
                return out
    return out
