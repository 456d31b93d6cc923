"""Arrow tables and batches of one table's rows, the same on every dialect: the snapshot
schema of a plan (plus the session id column), driver rows and batches conformed to it, key
order and the value-by-value comparison of two tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from htd_pipelines.registry.arrow_types import (
    KIND_META,
    STORED,
    TAGGED,
    ValueRefused,
    python_value,
    tag,
)
from htd_pipelines.registry.resolved import REL_COLUMN, TablePlan


def output_schema(plan: TablePlan, rel_type: pa.DataType) -> pa.Schema:
    return plan.arrow_schema().append(pa.field(REL_COLUMN, rel_type))


def rel_arrow_type(plan: TablePlan) -> pa.DataType:
    root = plan
    while root.parent is not None:
        root = root.parent
    return next(c.arrow for c in root.columns if c.name == root.rule.key)


# The values Python (the portable paths, executemany) can hold: anything outside is refused at
# extract, on every path, rather than carried where one path could not write it back.
_DATE_MIN, _DATE_MAX = -719_162, 2_932_896  # 0001-01-01, 9999-12-31 (days since 1970)
_US_MIN, _US_MAX = -62_135_596_800_000_000, 253_402_300_799_999_999
_TIME_MAX = 86_400_000_000  # time 24:00:00 (PostgreSQL's) is not a Python time


def _out_of_range(arr: pa.Array) -> pa.Array | None:
    """Mask of the temporal values Python cannot hold (None: not temporal, or all fine)."""
    t = arr.type
    if pa.types.is_date32(t):
        raw, lo, hi = arr.view(pa.int32()), _DATE_MIN, _DATE_MAX
    elif pa.types.is_timestamp(t) and t.unit == "us":
        raw, lo, hi = arr.view(pa.int64()), _US_MIN, _US_MAX
    elif pa.types.is_time64(t) and t.unit == "us":
        raw, lo, hi = arr.view(pa.int64()), 0, _TIME_MAX - 1
    else:
        return None
    bounds = pc.min_max(raw)  # one pass, nothing allocated: the mask only when it is needed
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or (low >= lo and high <= hi):
        return None
    return pc.fill_null(pc.or_(pc.less(raw, lo), pc.greater(raw, hi)), False)


def _uuid_text(arr: pa.Array) -> pa.Array:
    """16-byte uuids (ADBC's arrow.uuid) as their canonical text, vectorized."""
    storage = arr.storage if isinstance(arr.type, pa.BaseExtensionType) else arr
    n = len(storage)
    data = storage.buffers()[1]
    raw = bytes(memoryview(data)[storage.offset * 16 : (storage.offset + n) * 16]) if n else b""
    offsets = pa.py_buffer(np.arange(0, 32 * n + 1, 32, dtype=np.int32))
    hexed = pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(raw.hex().encode())])
    bounds = ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
    parts = [pc.utf8_slice_codeunits(hexed, a, b) for a, b in bounds]
    out = pc.binary_join_element_wise(*parts, "-")
    if storage.null_count:
        out = pc.if_else(storage.is_valid(), out, pa.nulls(n, pa.string()))
    return out


def _key_of(batch: pa.RecordBatch, key: Sequence[str], i: int) -> dict | None:
    if not key:
        return None
    return {k: batch.column(batch.schema.get_field_index(k))[i].as_py() for k in key}


def conform(batch: pa.RecordBatch, schema: pa.Schema, key: Sequence[str] = ()) -> pa.RecordBatch:
    """Cast a driver's batch to the snapshot schema (ADBC's numeric/json/uuid extension types
    etc.). A value the snapshot type cannot hold exactly raises ValueRefused (naming the
    column and, with `key`, the row)."""
    arrays = []
    for field, column in zip(schema, batch.columns, strict=True):
        arr = column
        if pa.types.is_string(field.type) and _is_uuid(column.type):
            arr = _uuid_text(column)
        elif isinstance(column.type, pa.ExtensionType):
            arr = column.storage
        if arr.type != field.type:
            try:
                arr = arr.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                i = _first_failing_cast(arr, field.type)
                value = arr[i].as_py() if i is not None else None
                row = _key_of(batch, key, i or 0)
                raise ValueRefused(field.name, value, str(exc), row) from None
        bad = _out_of_range(arr)
        if bad is not None:
            i = pc.indices_nonzero(bad)[0].as_py()
            raise ValueRefused(
                field.name,
                "out of range",
                f"{field.type} outside 0001-01-01..9999-12-31 / 00:00..23:59:59.999999: "
                "infinity, a date BC, a year after 9999 or 24:00",
                _key_of(batch, key, i),
            )
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _is_uuid(t: pa.DataType) -> bool:
    if isinstance(t, pa.BaseExtensionType):
        return t.extension_name == "arrow.uuid"
    return pa.types.is_fixed_size_binary(t) and t.byte_width == 16


def _first_failing_cast(arr: pa.Array, to: pa.DataType) -> int | None:
    for i in range(len(arr)):
        try:
            arr.slice(i, 1).cast(to)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return i
    return None


_STORED_PYTHON = {"int64": int, "double": float, "string": str, "binary": bytes}


def _stored_misfit(values: Sequence, field: pa.Field) -> int | None:
    """SQLite: the first value whose storage class is not the column's (None: all fit)."""
    want = _STORED_PYTHON[str(field.type)]
    for i, v in enumerate(values):
        if v is not None and (type(v) is not want):
            return i
    return None


def rows_to_batch(
    rows: Sequence[Sequence], schema: pa.Schema, key: Sequence[str] = ()
) -> pa.RecordBatch:
    """Python rows (as drivers return them) to a batch of the given schema. A value the
    column's Arrow type cannot hold exactly raises ValueRefused naming the column and, with
    `key` (column names of the schema), the row's key."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    positions = [schema.get_field_index(k) for k in key]

    def refuse(field: pa.Field, i: int, why: str) -> ValueRefused:
        row_key = {k: rows[i][p] for k, p in zip(key, positions, strict=True)} if key else None
        value = columns[schema.get_field_index(field.name)][i]
        return ValueRefused(field.name, value, why, row_key)

    arrays = []
    for field, values in zip(schema, columns, strict=True):
        kind = (field.metadata or {}).get(KIND_META)
        if kind == TAGGED.encode():
            arrays.append(pa.array([tag(v) for v in values], type=field.type))
            continue
        if kind == STORED.encode():
            i = _stored_misfit(values, field)
            if i is not None:
                why = f"SQLite {type(values[i]).__name__} in a column carried as {field.type}"
                raise refuse(field, i, why)
        try:
            arrays.append(pa.array(values, type=field.type))
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
        converted = []
        for i, v in enumerate(values):
            try:
                converted.append(python_value(v, field.type))
            except (TypeError, ValueError, OverflowError) as exc:
                raise refuse(field, i, str(exc)) from None
        try:
            arrays.append(pa.array(converted, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            i = next((j for j, v in enumerate(converted) if not _fits(v, field.type)), 0)
            raise refuse(field, i, str(exc)) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _fits(value: object, arrow: pa.DataType) -> bool:
    try:
        pa.array([value], type=arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return False
    return True


def sort_by_key(table: pa.Table, key: list[str]) -> pa.Table:
    """`table` in ascending key order (byte order for text, nulls last, stable), as it is
    when it already is: only the key columns are sorted to find out, and the rows are
    gathered only when they must move."""
    if table.num_rows < 2:
        return table
    if len(key) == 1:
        col = table.column(key[0])
        if pa.types.is_integer(col.type) and col.null_count == 0:
            values = col.to_numpy()
            if bool((values[1:] >= values[:-1]).all()):
                return table
    order = pc.sort_indices(table.select(key), sort_keys=[(c, "ascending") for c in key])
    if bool((order.to_numpy() == np.arange(table.num_rows)).all()):
        return table
    return table.take(order)


def _same_keys(a: pa.Table, b: pa.Table, key: list[str]) -> bool:
    return a.num_rows == b.num_rows and all(a.column(c).equals(b.column(c)) for c in key)


def align_by_key(expected: pa.Table, actual: pa.Table, key: list[str]) -> tuple[pa.Table, pa.Table]:
    """Both tables with their rows in the same key order, sorting only what is out of order."""
    if _same_keys(expected, actual, key):
        return expected, actual
    expected = sort_by_key(expected, key)
    if _same_keys(expected, actual, key):
        return expected, actual
    return expected, sort_by_key(actual, key)


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
        if pa.types.is_floating(a.type):  # NaN is a value like any other: NaN equals NaN
            both_null = pc.or_(both_null, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
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
