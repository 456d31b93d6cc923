"""PostgreSQL's fast paths, behind the one interface of read.py and write.py.

- Read (extract): ADBC (libpq COPY binary straight into Arrow), pooled per process.
- Write (restore): `COPY ... FROM STDIN (FORMAT binary)` encoded by pgpq (Rust, Arrow to
  PostgreSQL's binary wire format) when every column of the table has a type whose binary form
  pgpq writes exactly (`binary_copy_types`); otherwise `COPY ... FROM STDIN (FORMAT csv)` fed
  by Arrow's C++ CSV writer.
- Read-back: `COPY (SELECT ...) TO STDOUT` parsed by Arrow's CSV reader (`copy_out`), or,
  after a binary COPY, the sha256 of the binary COPY of the same columns in key order
  compared with what was sent (`same_as_sent`).
- After a write: serial/identity sequences advanced past the restored keys, and a table the
  insert more than doubled ANALYZEd inside the transaction.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import select
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.visitors import replacement_traverse

from htd_pipelines.dialects.arrow_rows import conform, output_schema, rel_arrow_type, sort_by_key
from htd_pipelines.dialects.engine import quoted
from htd_pipelines.registry.arrow_types import ValueRefused, value_bytes
from htd_pipelines.registry.resolved import TablePlan

if TYPE_CHECKING:  # imported where used: pgpq and psycopg load only for PostgreSQL
    from pgpq import ArrowToPostgresBinaryEncoder
    from psycopg.pq.abc import PGconn, PGresult

COPY_CHUNK_ROWS = 20_000  # small: the server starts on a table after one chunk is encoded


def _csv_ready(table: pa.Table) -> pa.Table:
    """Columns in the text form PostgreSQL's COPY csv reads (bytea as \\x hex)."""
    arrays = []
    for col in table.columns:
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            values = [None if v is None else "\\x" + v.hex() for v in col.to_pylist()]
            arrays.append(pa.array(values, pa.string()))
        else:
            arrays.append(col)
    return pa.Table.from_arrays(arrays, names=table.column_names)


# PostgreSQL base types whose binary receive function reads exactly what pgpq writes for the
# snapshot's Arrow type (arrow_types.arrow_for); a table with any other column (uuid, interval,
# arrays, enums, domains, unbounded numeric carried as text, ...) is loaded as csv.
_BINARY_ARROW: dict[str, object] = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "bool": pa.bool_(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.types.is_timestamp,
    "numeric": pa.types.is_decimal128,
}


def _column_types(conn: Connection, tplan: TablePlan) -> dict[str, tuple[str, str]]:
    """column -> (type name, typtype) as PostgreSQL itself has them (domains stay domains)."""
    name, _ = quoted(conn, tplan)
    rows = conn.execute(
        sa.text(
            "SELECT a.attname, t.typname, t.typtype FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"t": name},
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def _binary_types(conn: Connection, tplan: TablePlan, schema: pa.Schema) -> dict[str, str] | None:
    """column -> PostgreSQL type name when every column can go through COPY (FORMAT binary)
    with pgpq's encoding; None when one cannot."""
    types = _column_types(conn, tplan)
    out = {}
    for field in schema:
        typname, typtype = types.get(field.name, ("", ""))
        expected = _BINARY_ARROW.get(typname) if typtype == "b" else None
        if expected is None:
            return None
        ok = expected(field.type) if callable(expected) else field.type == expected
        if not ok:
            return None
        out[field.name] = typname
    return out


def binary_copy_types(conn: Connection, tplan: TablePlan, schema: pa.Schema) -> bool:
    """Whether every column can go through COPY (FORMAT binary) with pgpq's encoding."""
    return _binary_types(conn, tplan, schema) is not None


def _binary_encoder(schema: pa.Schema, types: dict[str, str]) -> ArrowToPostgresBinaryEncoder:
    import pgpq
    import pgpq.encoders
    import pgpq.schema

    encoders = {}
    for field in schema:
        if types[field.name] == "jsonb":
            encoders[field.name] = pgpq.encoders.StringEncoderBuilder.new_with_output(
                field, pgpq.schema.Jsonb()
            )
        else:
            encoders[field.name] = pgpq.ArrowToPostgresBinaryEncoder.infer_encoder(field)
    return pgpq.ArrowToPostgresBinaryEncoder.new_with_encoders(schema, encoders)


@dataclass(frozen=True)
class SentRows:
    """What a COPY (FORMAT binary) sent: its columns and the sha256 of the whole stream.

    PostgreSQL's `COPY (SELECT those columns ... ORDER BY key) TO STDOUT (FORMAT binary)`
    gives back the very same bytes when every row holds exactly the values sent, in the same
    order (the rows are sent in key order): `same_as_sent` compares the two digests, so that
    the read-back of a restore decodes nothing when nothing changed."""

    columns: tuple[str, ...]
    sha256: str


def _order_by(tplan: TablePlan, columns: sa.ColumnCollection) -> list:
    """The key columns for ORDER BY, text ones in the "C" collation (byte order, as Arrow's)."""
    out = []
    for name in tplan.primary_key:
        col = columns[name]
        out.append(col.collate("C") if isinstance(tplan.table.c[name].type, sa.String) else col)
    return out


def _copy_in_binary(
    conn: Connection, tplan: TablePlan, table: pa.Table, types: dict[str, str]
) -> SentRows:
    table = sort_by_key(table, list(tplan.primary_key))  # as the read-back orders them
    name, cols = quoted(conn, tplan, table.column_names)
    encoder = _binary_encoder(table.schema, types)
    raw = conn.connection.driver_connection
    sql = f"COPY {name} ({cols}) FROM STDIN (FORMAT binary)"
    digest = hashlib.sha256()
    with raw.cursor() as cur, cur.copy(sql) as copy:
        for data in _binary_stream(encoder, table):
            digest.update(data)
            copy.write(data)
    return SentRows(tuple(table.column_names), digest.hexdigest())


def _binary_stream(encoder: ArrowToPostgresBinaryEncoder, table: pa.Table) -> Iterator[bytes]:
    yield encoder.write_header()
    for batch in table.to_batches(max_chunksize=COPY_CHUNK_ROWS):
        yield encoder.write_batch(batch)
    yield encoder.finish()


def same_as_sent(conn: Connection, tplan: TablePlan, ids: list, sent: SentRows) -> bool:
    """Whether the sessions' rows now in the table are byte for byte what `sent` wrote: the
    table's binary COPY of those columns in key order hashes to the same sha256."""
    table = tplan.table  # the stored columns as they are (the extract casts some to text)
    stmt = (
        sa.select(*[table.c[c] for c in sent.columns])
        .where(tplan.where_owned())
        .order_by(*_order_by(tplan, table.c))
        .params(ids=ids)
    )
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    raw = conn.connection.driver_connection
    digest = _copy_out_sha256(raw.pgconn, f"COPY ({sql}) TO STDOUT (FORMAT binary)")
    return digest == sent.sha256


def _copy_out_sha256(pgconn: PGconn, sql: str) -> str:
    """The sha256 of everything a `COPY ... TO STDOUT` sends, read with libpq's own calls
    (psycopg's public `pq` wrapper). PostgreSQL sends one row per message: psycopg's `Copy`
    iterator costs about 0.7 µs a row in generator and lock machinery, this loop half that,
    and each row is hashed at once, not kept (it holds a libpq buffer)."""
    import psycopg
    from psycopg import pq

    pgconn.send_query(sql.encode())
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        _drain_results(pgconn)
        raise _result_error(result, pgconn)
    digest = hashlib.sha256()
    update, get = digest.update, pgconn.get_copy_data
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            update(data)
        elif nbytes == 0:  # nothing buffered: wait for the socket
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
        elif nbytes == -1:  # the copy is done; its final result follows
            break
        else:
            raise psycopg.OperationalError(pgconn.get_error_message())
    failed = None
    while (result := pgconn.get_result()) is not None:
        if result.status != pq.ExecStatus.COMMAND_OK:
            failed = failed or result
    if failed is not None:
        raise _result_error(failed, pgconn)
    return digest.hexdigest()


def _drain_results(pgconn: PGconn) -> None:
    while pgconn.get_result() is not None:
        pass


def _result_error(result: PGresult | None, pgconn: PGconn) -> Exception:
    """The psycopg exception (by SQLSTATE) for a failed low-level result."""
    import psycopg
    from psycopg import pq

    if result is None:
        return psycopg.OperationalError(pgconn.get_error_message())
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    message = (result.error_message or b"").decode(errors="replace").strip()
    try:
        cls = psycopg.errors.lookup(state.decode()) if state else psycopg.DatabaseError
    except KeyError:  # a SQLSTATE psycopg does not name
        cls = psycopg.DatabaseError
    return cls(message)


def copy_in(conn: Connection, tplan: TablePlan, table: pa.Table) -> SentRows | None:
    types = _binary_types(conn, tplan, table.schema)
    if types is not None:
        return _copy_in_binary(conn, tplan, table, types)
    name, cols = quoted(conn, tplan, table.column_names)
    raw = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY {name} ({cols}) FROM STDIN (FORMAT csv)") as copy:
        for data in _csv_stream(table):
            copy.write(data)
    return None


def _csv_stream(table: pa.Table) -> Iterator[memoryview]:
    """`table` as PostgreSQL's COPY csv reads it, chunk by chunk (Arrow's C++ CSV writer)."""
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    for start in range(0, table.num_rows, COPY_CHUNK_ROWS):
        buf = io.BytesIO()
        pacsv.write_csv(_csv_ready(table.slice(start, COPY_CHUNK_ROWS)), buf, options)
        yield buf.getbuffer()


ANALYZE_MIN_ROWS = 1_000


def refresh_statistics(conn: Connection, tplan: TablePlan, inserted: int) -> None:
    """ANALYZE a table the insert has more than doubled, inside the transaction (it samples
    the transaction's own new rows). What follows in the restore (the read-back, which joins a
    child to its parents) is planned from the statistics: a table emptied and vacuumed keeps
    its pages with `reltuples` 0, the planner then expects one row where a million are, and a
    nested loop over two such tables is quadratic (hours, not seconds)."""
    if inserted < ANALYZE_MIN_ROWS:
        return
    name = conn.dialect.identifier_preparer.format_table(tplan.table)
    known = conn.execute(
        sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": name}
    ).scalar()
    if known is None or inserted > known:
        # a small sample is enough to know the row counts; autovacuum analyzes it properly
        # once the rows are committed (they are many more than its threshold)
        target = conn.execute(sa.text("SHOW default_statistics_target")).scalar()
        conn.execute(sa.text("SELECT set_config('default_statistics_target', '10', true)"))
        conn.execute(sa.text(f"ANALYZE {name}"))
        conn.execute(
            sa.text("SELECT set_config('default_statistics_target', :v, true)"), {"v": target}
        )


def advance_sequences(conn: Connection, tplan: TablePlan) -> None:
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


READ_BLOCK_BYTES = 8 << 20
_BOM = "\ufeff".encode()


def _unhex(col: pa.ChunkedArray) -> pa.Array:
    """bytea text (\\x + hex) to binary, vectorized: one unhexlify over the whole column."""
    arr = pc.utf8_slice_codeunits(col.combine_chunks(), 2)  # drop the \x prefix
    n = len(arr)
    offsets, data = value_bytes(arr)
    raw = binascii.unhexlify(data) if len(data) else b""
    new_offsets = (offsets // 2).astype(np.int32)
    buffers = [None, pa.py_buffer(new_offsets), pa.py_buffer(raw)]
    out = pa.Array.from_buffers(pa.binary(), n, buffers)
    if arr.null_count:
        out = pc.if_else(arr.is_valid(), out, pa.nulls(n, pa.binary()))
    return out


def copy_out(conn: Connection, tplan: TablePlan, ids: list) -> pa.Table:
    """The rows through COPY ... TO STDOUT (FORMAT csv), parsed by Arrow block by block in a
    second thread while the next rows arrive. PostgreSQL sends one row per CopyData message, so
    a block of whole messages is a block of whole rows. In key order (a server-side sort is
    cheaper than Arrow's): when the snapshot is in key order too, as an extract of rows
    inserted in key order is, the compare needs no sort at all (align_by_key)."""
    schema = output_schema(tplan, rel_arrow_type(tplan))
    stmt = tplan.select_rows().order_by(*[tplan.table.c[c] for c in tplan.primary_key])
    return copy_csv(conn, stmt.params(ids=ids), schema)


def delete_returning(conn: Connection, tplan: TablePlan, ids: list) -> pa.Table:
    """Delete the sessions' rows of the table; their values as they were, in snapshot schema:
    `COPY (DELETE ... RETURNING ...) TO STDOUT (FORMAT csv)` parsed by Arrow (no Python row
    objects: about 4x faster than the driver's rows at 1M rows)."""
    stmt = tplan.delete_returning()

    def bind(element: sa.ClauseElement) -> sa.ClauseElement | None:  # DML has no .params()
        if isinstance(element, sa.BindParameter) and element.key == "ids":
            return sa.bindparam("ids", ids, expanding=True)
        return None

    return copy_csv(conn, replacement_traverse(stmt, {}, bind), tplan.arrow_schema())


def copy_csv(conn: Connection, stmt: sa.Executable, schema: pa.Schema) -> pa.Table:
    """The rows of a statement (a SELECT, or a DELETE ... RETURNING) through
    `COPY (...) TO STDOUT (FORMAT csv)`, as a table of `schema` (see copy_out)."""
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    binary = {f.name for f in schema if pa.types.is_binary(f.type)}
    # Arrow's CSV reader converts no text to decimal256: read as text, cast after
    as_text = binary | {f.name for f in schema if pa.types.is_decimal256(f.type)}
    read_types = {f.name: (pa.string() if f.name in as_text else f.type) for f in schema}
    read_options = pacsv.ReadOptions(column_names=schema.names, block_size=16 << 20)
    parse_options = pacsv.ParseOptions(newlines_in_values=True)
    convert_options = pacsv.ConvertOptions(
        column_types=read_types,
        true_values=["t"],
        false_values=["f"],
        null_values=[""],  # PostgreSQL's csv NULL: an unquoted empty field, nothing else
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )

    def parse(block: bytes) -> pa.Table:
        if block.startswith(_BOM):  # Arrow drops a BOM opening its input: start on an empty
            block = b"\n" + block  # line (skipped) so that a value's own BOM stays
        return pacsv.read_csv(
            pa.BufferReader(block),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )

    raw = conn.connection.driver_connection
    parts = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: list[bytes] = []
        size = 0
        with raw.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
            for chunk in copy:
                pending.append(bytes(chunk))
                size += len(chunk)
                if size >= READ_BLOCK_BYTES:
                    parts.append(pool.submit(parse, b"".join(pending)))
                    pending, size = [], 0
        if pending:
            parts.append(pool.submit(parse, b"".join(pending)))
        tables = [p.result() for p in parts]
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables(tables)
    arrays = []
    for field in schema:
        col = table.column(field.name)
        if field.name in binary:
            col = pa.chunked_array([_unhex(col)])
        arrays.append(col.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def unrepresentable(engine: Engine, plan: TablePlan, ids: list) -> ValueRefused | None:
    """The first value of the sessions' rows that no snapshot type holds exactly, with its key
    and the server's text of it (None: none found). Dates and timestamps that are infinite,
    BC or after 9999, time 24:00:00 and NaN in a NUMERIC(p, s): Python (the portable paths)
    cannot hold them, so they are refused on every path."""
    sub = plan.select_rows().subquery()
    checks = []
    for spec in plan.columns:
        c = sub.c[spec.name]
        t = spec.arrow
        if pa.types.is_date32(t) or pa.types.is_timestamp(t):
            low = sa.literal_column("DATE '0001-01-01'")
            high = sa.literal_column("DATE '10000-01-01'")
            checks.append((spec.name, sa.or_(sa.not_(sa.func.isfinite(c)), c < low, c >= high)))
        elif pa.types.is_time64(t):
            checks.append((spec.name, c >= sa.literal_column("TIME '24:00:00'")))
        elif pa.types.is_decimal(t):
            checks.append((spec.name, c == sa.literal_column("NUMERIC 'NaN'")))
    text = [sa.type_coerce(sub.c[k], sa.String()) for k in plan.primary_key]
    with engine.connect() as conn:
        for name, cond in checks:
            stmt = sa.select(*text, sa.cast(sub.c[name], sa.Text)).where(cond).limit(1)
            row = conn.execute(stmt, {"ids": ids}).first()
            if row is not None:
                key = dict(zip(plan.primary_key, row[:-1], strict=True))
                why = "infinity, BC, a year after 9999, 24:00:00 or NaN: no exact snapshot value"
                return ValueRefused(name, row[-1], why, key)
    return None


def _adbc_uri(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


_ADBC_POOL: dict[str, list] = {}

_ADBC_LOCK = threading.Lock()

ADBC_BATCH_BYTES = 4 << 20  # smaller batches overlap reading and encoding better


@contextmanager
def adbc_connection(engine: Engine) -> Iterator:
    """A pooled low-level ADBC connection (opening one costs ~30 ms: once per process, not
    per table). The low-level API, not adbc's DB-API module, which imports pandas (~35 MB)."""
    import adbc_driver_manager
    import adbc_driver_postgresql

    uri = _adbc_uri(engine)
    with _ADBC_LOCK:
        idle = _ADBC_POOL.setdefault(uri, [])
        pair = idle.pop() if idle else None
    if pair is None:
        database = adbc_driver_postgresql.connect(uri)
        pair = (database, adbc_driver_manager.AdbcConnection(database))
    ok = False
    try:
        yield pair[1]
        ok = True
    finally:
        if ok:
            with _ADBC_LOCK:
                _ADBC_POOL[uri].append(pair)
        else:
            pair[1].close()
            pair[0].close()


def read_batches(
    engine: Engine,
    stmt: sa.Select,
    ids: list,
    schema: pa.Schema,
    key: tuple[str, ...] = (),
    *,
    snapshot: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """The statement's rows through ADBC; with `snapshot` (an exported snapshot id), read in a
    REPEATABLE READ transaction of that snapshot: the state every table of the backup sees."""
    import adbc_driver_manager

    sql = str(
        stmt.params(ids=ids).compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    )
    with adbc_connection(engine) as conn:
        statement = adbc_driver_manager.AdbcStatement(conn)
        if snapshot is not None:
            conn.set_options(**{"adbc.connection.autocommit": "false"})
        try:
            if snapshot is not None:
                for setup in (
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                    f"SET TRANSACTION SNAPSHOT '{snapshot}'",
                ):
                    statement.set_sql_query(setup)
                    statement.execute_update()
            statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(ADBC_BATCH_BYTES)}
            )
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            reader = pa.RecordBatchReader._import_from_c(stream.address)
            for batch in reader:
                yield conform(batch, schema, key)
        finally:
            statement.close()
            if snapshot is not None:
                conn.rollback()
                conn.set_options(**{"adbc.connection.autocommit": "true"})
