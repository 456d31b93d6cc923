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
from dataclasses import dataclass

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


@dataclass
class ReadSnapshot:
    """One state of the database that every table of a backup is read from: a transaction
    held open on `conn` from the plan to the last extract. PostgreSQL exports it
    (`pg_export_snapshot()`), so the ADBC fast path's own connection reads the same state
    (`SET TRANSACTION SNAPSHOT`); MariaDB/MySQL reads on `conn` itself (START TRANSACTION WITH
    CONSISTENT SNAPSHOT); SQLite too (one read transaction: writers wait until it ends)."""

    method: str
    conn: Connection
    pg_snapshot: str | None = None


_SNAPSHOTS: dict[str, ReadSnapshot] = {}
_SNAPSHOTS_LOCK = threading.Lock()


def open_snapshot(engine: Engine, key: str) -> str:
    """Open the read snapshot of a backup run (`key`: its run id); what the manifest records."""
    close_snapshot(key)
    name = engine.dialect.name
    if name == "postgresql":
        conn = engine.connect().execution_options(isolation_level="REPEATABLE READ")
        conn.begin()
        exported = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
        snap = ReadSnapshot("postgresql pg_export_snapshot (repeatable read)", conn, exported)
    elif name in ("mysql", "mariadb"):
        conn = engine.connect().execution_options(isolation_level="REPEATABLE READ")
        conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        snap = ReadSnapshot("start transaction with consistent snapshot", conn)
    else:
        conn = engine.connect()
        conn.begin()
        conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()  # the read lock
        snap = ReadSnapshot("sqlite read transaction", conn)
    with _SNAPSHOTS_LOCK:
        _SNAPSHOTS[key] = snap
    return snap.method


def snapshot_of(key: str) -> ReadSnapshot | None:
    """The run's read snapshot, if this process holds one (the in-process executor runs the
    plan and every extract in one process; elsewhere each table is read on its own)."""
    with _SNAPSHOTS_LOCK:
        return _SNAPSHOTS.get(key)


def close_snapshot(key: str) -> None:
    """End the run's read snapshot (before anything of the run writes: on SQLite the read
    transaction would hold writers off)."""
    with _SNAPSHOTS_LOCK:
        snap = _SNAPSHOTS.pop(key, None)
    if snap is not None:
        try:
            snap.conn.rollback()
        finally:
            snap.conn.close()


def stream_batches(
    engine: Engine,
    plan: TablePlan,
    ids: Iterable,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    conn: Connection | None = None,
    snapshot: ReadSnapshot | None = None,
) -> Iterator[pa.RecordBatch]:
    """The rows of `plan`'s table owned by the sessions `ids`, in snapshot schema + REL_COLUMN.

    With `conn`, rows are read inside that connection's transaction (portable path). A value
    that cannot be carried exactly raises ValueRefused naming the table, column, key and
    value (on every path, before anything is written or deleted).
    """
    ids = list(ids)
    try:
        yield from _batches(engine, plan, ids, batch_rows, conn, snapshot)
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
    engine: Engine,
    plan: TablePlan,
    ids: list,
    batch_rows: int,
    conn: Connection | None,
    snapshot: ReadSnapshot | None = None,
) -> Iterator[pa.RecordBatch]:
    schema = output_schema(plan, rel_arrow_type(plan))
    stmt = plan.select_rows()
    key = tuple(plan.primary_key)
    if conn is None and engine.dialect.name == "postgresql" and settings.fast_path_enabled():
        exported = snapshot.pg_snapshot if snapshot is not None else None
        yield from postgresql.read_batches(engine, stmt, ids, schema, key, snapshot=exported)
        return
    if conn is None and snapshot is not None:
        conn = snapshot.conn
    if conn is not None:
        yield from _portable(conn, stmt, ids, schema, batch_rows, key)
        return
    with engine.connect() as own:
        yield from _portable(own, stmt, ids, schema, batch_rows, key)
