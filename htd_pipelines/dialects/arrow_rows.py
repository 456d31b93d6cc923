"""Arrow tables and batches of one table's rows, the same on every dialect: the snapshot
schema of a plan (plus the session id column), driver rows and batches conformed to it, key
order and the value-by-value comparison of two tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from htd_pipelines.registry.arrow_types import python_value
from htd_pipelines.registry.resolved import REL_COLUMN, TablePlan


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
    for field, column in zip(schema, batch.columns, strict=True):
        arr = column.storage if isinstance(column.type, pa.ExtensionType) else column
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
