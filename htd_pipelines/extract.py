"""Reading a session's rows as Arrow record batches: one interface, a fast path per dialect.

`stream_batches` yields batches in the table's snapshot schema plus the session id column.
PostgreSQL reads through ADBC (COPY binary under the hood, straight into Arrow); every other
dialect, and PostgreSQL when ADBC is switched off, uses the portable SQLAlchemy path with a
server-side cursor. Both stream: memory is bounded by the batch size, not the session size.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines.arrow_types import python_value
from htd_pipelines.plan import REL_COLUMN, TablePlan

DEFAULT_BATCH_ROWS = 65_536
FAST_PATH_ENV = "HTD_FAST_PATH"  # "0" switches dialect fast paths off (portable path only)


def fast_path_enabled() -> bool:
    return os.environ.get(FAST_PATH_ENV, "1") not in ("0", "false", "no")


def output_schema(plan: TablePlan, rel_type: pa.DataType) -> pa.Schema:
    return plan.arrow_schema().append(pa.field(REL_COLUMN, rel_type))


def rel_arrow_type(plan: TablePlan) -> pa.DataType:
    root = plan
    while root.parent is not None:
        root = root.parent
    return next(c.arrow for c in root.columns if c.name == root.rule.key)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast a driver's batch to the snapshot schema (ADBC's numeric/json extension types etc.)."""
    arrays = []
    for field, arr in zip(schema, batch.columns, strict=True):
        if isinstance(arr.type, pa.ExtensionType):
            arr = arr.storage
        if arr.type != field.type:
            arr = arr.cast(field.type)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def rows_to_batch(rows: Sequence[Sequence], schema: pa.Schema) -> pa.RecordBatch:
    """Python rows (as drivers return them) to a batch of the given schema."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            arrays.append(pa.array([python_value(v, field.type) for v in values], type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _portable(
    conn: Connection, stmt: sa.Select, ids: list, schema: pa.Schema, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    # per statement: Connection.execution_options() would change the connection for good
    result = conn.execute(
        stmt, {"ids": ids}, execution_options={"stream_results": True, "yield_per": batch_rows}
    )
    for rows in result.partitions(batch_rows):
        yield rows_to_batch(rows, schema)


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


def _postgresql_adbc(
    engine: Engine, stmt: sa.Select, ids: list, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    import adbc_driver_manager

    sql = str(
        stmt.params(ids=ids).compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    )
    with adbc_connection(engine) as conn:
        statement = adbc_driver_manager.AdbcStatement(conn)
        try:
            statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(ADBC_BATCH_BYTES)}
            )
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            reader = pa.RecordBatchReader._import_from_c(stream.address)
            for batch in reader:
                yield conform(batch, schema)
        finally:
            statement.close()


def prefetch(batches: Iterator[pa.RecordBatch], depth: int = 4) -> Iterator[pa.RecordBatch]:
    """Read ahead on a thread so that the database read overlaps Parquet encoding.

    Both sides release the GIL in native code (libpq/ADBC, Arrow's Parquet writer), so a
    bounded queue of `depth` batches keeps memory bounded and the two cores busy.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    worker = threading.Thread(target=produce, name="htd-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
        close = getattr(batches, "close", None)
        if close is not None and not worker.is_alive():
            close()


def stream_batches(
    engine: Engine,
    plan: TablePlan,
    ids: Iterable,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    conn: Connection | None = None,
) -> Iterator[pa.RecordBatch]:
    """The rows of `plan`'s table owned by the sessions `ids`, in snapshot schema + REL_COLUMN.

    With `conn`, rows are read inside that connection's transaction (portable path).
    """
    ids = list(ids)
    schema = output_schema(plan, rel_arrow_type(plan))
    stmt = plan.select_rows()
    if conn is None and engine.dialect.name == "postgresql" and fast_path_enabled():
        yield from _postgresql_adbc(engine, stmt, ids, schema)
        return
    if conn is not None:
        yield from _portable(conn, stmt, ids, schema, batch_rows)
        return
    with engine.connect() as own:
        yield from _portable(own, stmt, ids, schema, batch_rows)
