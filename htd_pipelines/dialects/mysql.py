"""MariaDB/MySQL's fast path for writing snapshot rows: LOAD DATA LOCAL INFILE.

The rows of an Arrow table are turned into LOAD DATA's default text format (tab-separated,
backslash-escaped, ``\\N`` for NULL) with Arrow compute kernels, fed through a pipe (never a
file on disk: no row in clear text is left behind by a killed run) and loaded on the caller's
connection, so the caller's transaction covers them. Binary columns
travel as hex and are put back with ``UNHEX``. Timestamps travel as UTC wall-clock text (every
session of ours runs with ``time_zone = '+00:00'``).

LOAD DATA LOCAL treats duplicate keys and foreign-key failures as warnings and skips the row
(the server cannot stop the client's file half-way), so every load is checked: a row count
below the table's raises the driver's IntegrityError (the restore then lists the conflicts and
rolls back), any warning raises LoadDataError naming the table and the server's messages.

Used when the connection was opened with PyMySQL's ``local_infile`` (db.create_engine does)
and the server allows it (``@@local_infile``); otherwise write.py inserts with executemany.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.dialects.mysql import BIT
from sqlalchemy.engine import Connection

from htd_pipelines.registry.arrow_types import value_bytes
from htd_pipelines.registry.resolved import TablePlan

CHUNK_ROWS = 200_000
_INFO_KEY = "htd_local_infile"


class LoadDataError(RuntimeError):
    """LOAD DATA reported warnings: a value would not have been stored as it is."""


def available(conn: Connection) -> bool:
    """Whether this MariaDB/MySQL connection can LOAD DATA LOCAL (client flag and server)."""
    if conn.dialect.name not in ("mysql", "mariadb"):
        return False
    dbapi_conn = conn.connection.dbapi_connection
    info = conn.connection.info
    if _INFO_KEY not in info:
        from pymysql.constants import CLIENT

        allowed = bool(getattr(dbapi_conn, "client_flag", 0) & CLIENT.LOCAL_FILES)
        if allowed:
            allowed = bool(conn.exec_driver_sql("SELECT @@local_infile").scalar())
        info[_INFO_KEY] = allowed
    return info[_INFO_KEY]


def _hex(arr: pa.Array) -> pa.Array:
    """binary -> its hex text, in one pass over the whole buffer."""
    n = len(arr)
    offsets, data = value_bytes(arr)
    text = binascii.hexlify(data) if len(data) else b""
    new_offsets = (offsets * 2).astype(np.int32)
    out = pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(new_offsets), pa.py_buffer(text)]
    )
    if arr.null_count:
        out = pc.if_else(arr.is_valid(), out, pa.nulls(n, pa.string()))
    return out


def _text(col: pa.Array) -> pa.Array:
    """One column as LOAD DATA field text (NULL still null here)."""
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return _hex(col.cast(pa.binary()))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        col = pc.replace_substring(col, "\\", "\\\\")
        col = pc.replace_substring(col, "\t", "\\t")
        col = pc.replace_substring(col, "\n", "\\n")
        col = pc.replace_substring(col, "\x00", "\\0")
        return col.cast(pa.string())
    if pa.types.is_boolean(t):
        return col.cast(pa.int8()).cast(pa.string())
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            col = col.cast(pa.timestamp(t.unit))  # the UTC wall clock
        return col.cast(pa.string())
    if t == pa.float32():  # the double it is exactly: the server reads a double, then rounds
        col = col.cast(pa.float64())  # (float32's shortest text 3.4028235e+38 would overflow)
    return col.cast(pa.string())  # integers, floats (shortest exact form), decimals, dates


def _lines(batch: pa.RecordBatch) -> bytes:
    fields = [pc.fill_null(_text(col), "\\N") for col in batch.columns]
    rows = pc.binary_join_element_wise(*fields, "\t") if len(fields) > 1 else fields[0]
    rows = pc.binary_join_element_wise(rows, "", "\n")  # "row" + "\n" + ""
    return bytes(value_bytes(rows)[1])


@contextmanager
def _fed_pipe(table: pa.Table) -> Iterator[str]:
    """A path the driver opens to read the rows' LOAD DATA text: the read end of a pipe
    (`/dev/fd/N`) that a thread feeds, so no row is ever written to disk in clear (a killed
    run used to leave `htd_load_*.tsv` files behind) and memory holds one chunk at a time."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out:
                for batch in table.to_batches(max_chunksize=CHUNK_ROWS):
                    out.write(_lines(batch))
        except BrokenPipeError:  # the reader stopped (the statement failed): nothing to do
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
            failure.append(exc)

    feeder = threading.Thread(target=feed, name="htd-load-data", daemon=True)
    feeder.start()
    try:
        yield f"/dev/fd/{read_fd}"
    finally:
        os.close(read_fd)  # a feeder still writing gets EPIPE and stops
        feeder.join()
    if failure:
        raise failure[0]


_STALE_CHECKED: list[bool] = []


def remove_stale_files() -> None:
    """Once per process: remove `htd_load_*.tsv` files that runs of earlier releases, killed
    mid-restore, left in the temporary folder (rows in clear text)."""
    if _STALE_CHECKED:
        return
    _STALE_CHECKED.append(True)
    for path in Path(tempfile.gettempdir()).glob("htd_load_*.tsv"):
        with contextlib.suppress(OSError):
            path.unlink()


def load_data(conn: Connection, tplan: TablePlan, table: pa.Table) -> None:
    """All rows of `table` (snapshot schema) into the plan's table, inside conn's transaction."""
    prep = conn.dialect.identifier_preparer
    targets, sets = [], []
    for i, field in enumerate(table.schema):
        name = prep.quote(field.name)
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            targets.append(f"@h{i}")  # geometry too: the server's own bytes (SRID + WKB)
            sets.append(f"{name} = UNHEX(@h{i})")
        elif isinstance(tplan.table.c[field.name].type, BIT):  # a number, not its text's bits
            targets.append(f"@b{i}")
            sets.append(f"{name} = CAST(@b{i} AS UNSIGNED)")
        else:
            targets.append(name)
    sql = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {prep.format_table(tplan.table)} "
        "CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' "
        f"LINES TERMINATED BY '\\n' ({', '.join(targets)})"
        + (f" SET {', '.join(sets)}" if sets else "")
    )
    remove_stale_files()
    raw = conn.connection.dbapi_connection
    with _fed_pipe(table) as path, raw.cursor() as cur:
        loaded = cur.execute(sql, (path,))
        warnings = raw.show_warnings() if cur.warning_count else ()
    if loaded != table.num_rows:
        raise conn.dialect.dbapi.IntegrityError(
            f"LOAD DATA into {tplan.name} stored {loaded} of {table.num_rows} rows "
            "(duplicate keys or missing parent rows)"
        )
    if warnings:
        shown = "; ".join(str(w[2]) for w in warnings[:5])
        raise LoadDataError(f"LOAD DATA into {tplan.name}: the server warned: {shown}")
