"""Reading a session's rows as Arrow record batches: the one interface of every dialect.

`stream_batches` yields batches in the table's snapshot schema plus the session id column.
PostgreSQL reads through ADBC (postgresql.py: COPY binary under the hood, straight into
Arrow); every other dialect, and PostgreSQL with HTD_FAST_PATH=0, uses the portable SQLAlchemy
path with a server-side cursor. Both stream: memory is bounded by the batch size, not the
session size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines import settings
from htd_pipelines.dialects import postgresql
from htd_pipelines.dialects.arrow_rows import output_schema, rel_arrow_type, rows_to_batch
from htd_pipelines.registry.arrow_types import ValueRefused
from htd_pipelines.registry.resolved import TablePlan

DEFAULT_BATCH_ROWS = 65_536


def _portable(
    conn: Connection,
    stmt: sa.Select,
    ids: list,
    schema: pa.Schema,
    batch_rows: int,
    key: tuple[str, ...] = (),
) -> Iterator[pa.RecordBatch]:
    # per statement: Connection.execution_options() would change the connection for good
    result = conn.execute(
        stmt, {"ids": ids}, execution_options={"stream_results": True, "yield_per": batch_rows}
    )
    for rows in result.partitions(batch_rows):
        yield rows_to_batch(rows, schema, key)


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

    With `conn`, rows are read inside that connection's transaction (portable path). A value
    that cannot be carried exactly raises ValueRefused naming the table, column, key and
    value (on every path, before anything is written or deleted).
    """
    ids = list(ids)
    try:
        yield from _batches(engine, plan, ids, batch_rows, conn)
    except ValueRefused as exc:
        if isinstance(exc, _Named):
            raise
        found = _exact_culprit(engine, plan, ids) if conn is None else None
        raise _Named(plan.name, found or exc) from None
    except sa.exc.DataError as exc:  # the driver could not decode a value (PostgreSQL)
        found = _exact_culprit(engine, plan, ids) if conn is None else None
        if found is None:
            raise
        raise _Named(plan.name, found) from exc


class _Named(ValueRefused):
    """A ValueRefused whose message names the table too."""

    def __init__(self, table: str, refused: ValueRefused) -> None:
        super().__init__(refused.column, refused.value, refused.why, refused.key)
        self.table = table
        self.args = (refused.describe(table),)

    def __str__(self) -> str:
        return self.args[0]


def _exact_culprit(engine: Engine, plan: TablePlan, ids: list) -> ValueRefused | None:
    """The first value of the sessions that cannot be carried, as the server writes it."""
    if engine.dialect.name != "postgresql":
        return None
    return postgresql.unrepresentable(engine, plan, ids)


def _batches(
    engine: Engine, plan: TablePlan, ids: list, batch_rows: int, conn: Connection | None
) -> Iterator[pa.RecordBatch]:
    schema = output_schema(plan, rel_arrow_type(plan))
    stmt = plan.select_rows()
    key = tuple(plan.primary_key)
    if conn is None and engine.dialect.name == "postgresql" and settings.fast_path_enabled():
        yield from postgresql.read_batches(engine, stmt, ids, schema, key)
        return
    if conn is not None:
        yield from _portable(conn, stmt, ids, schema, batch_rows, key)
        return
    with engine.connect() as own:
        yield from _portable(own, stmt, ids, schema, batch_rows, key)
