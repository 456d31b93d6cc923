"""Digests, change marks and diffs of a session's tables, free of Dagster.

Change detection per table: where the table has the change-tracking column (HTD_CHANGE_COLUMN,
e.g. updated_at), its primary keys and max(column) are compared with the latest version's
recorded marks (rows, key digest, max) without reading whole rows; elsewhere the rows are read
and their digest compared with the recorded row digest. A table that differs is diffed exactly
by primary key (`diff_table`) and changes are applied to a base state by `apply_changes`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from htd_pipelines.backup import BackupError, pk_digest
from htd_pipelines.dialects.arrow_rows import rows_to_batch, sort_by_key
from htd_pipelines.dialects.read import stream_batches
from htd_pipelines.registry.arrow_types import value_bytes
from htd_pipelines.registry.resolved import TablePlan
from htd_pipelines.store.snapshots import SnapshotError


class ChainError(SnapshotError):
    """A version cannot be composed: a link of its chain is missing from the catalog, its files
    are missing or damaged, or it does not apply to its base. The message names the version."""


def _column_bytes(col: pa.Array) -> pa.Array:
    """A column as large_binary, one value per row, in a form that identifies the value."""
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pc.cast(col, pa.large_binary())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.cast(col, pa.large_binary())
    try:
        return pc.cast(pc.cast(col, pa.large_string()), pa.large_binary())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        values = [None if v is None else repr(v).encode() for v in col.to_pylist()]
        return pa.array(values, pa.large_binary())


def row_digest(table: pa.Table, key: Sequence[str]) -> str:
    """Order-independent digest of a table's rows (every column, NULLs distinct from empty)."""
    h = hashlib.sha256()
    h.update(json.dumps([[f.name, str(f.type)] for f in table.schema]).encode())
    table = sort_by_key(table, list(key))
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        h.update(b"\x1e" + name.encode())
        if not len(col):
            continue
        data = _column_bytes(col)
        h.update(pc.is_valid(data).to_numpy(zero_copy_only=False).tobytes())
        data = pc.fill_null(data, pa.scalar(b"", pa.large_binary()))
        if isinstance(data, pa.ChunkedArray):
            data = data.combine_chunks()
        offsets, values = value_bytes(data)
        h.update(np.diff(offsets).astype("<i8").tobytes())
        h.update(values)
    return h.hexdigest()


def _max_text(col: pa.ChunkedArray | pa.Array) -> str | None:
    if len(col) == 0:
        return None
    value = pc.max(col).as_py()
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)


def table_marks(table: pa.Table, tplan: TablePlan, change_column: str | None) -> dict:
    """What the next protective backup compares with: rows, digests, max(change column)."""
    key = list(tplan.primary_key)
    col = change_column if change_column in table.column_names else None
    return {
        "rows": table.num_rows,
        "row_digest": row_digest(table, key),
        "pk_digest": pk_digest(table.select(key)),
        "change_column": col,
        "change_max": _max_text(table.column(col)) if col else None,
    }


def probe(engine: Engine, tplan: TablePlan, ids: list, column: str) -> tuple:
    """(rows, key digest, max(column)) of the session's rows now, reading keys and column only."""
    key = list(tplan.primary_key)
    names = list(dict.fromkeys([*key, column]))
    sub = tplan.select_rows().subquery()
    schema = pa.schema([tplan.arrow_schema().field(c) for c in names])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*[sub.c[c] for c in names]), {"ids": ids}).all()
    table = pa.Table.from_batches([rows_to_batch(rows, schema)], schema=schema)
    return table.num_rows, pk_digest(table.select(key)), _max_text(table.column(column))


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns and types (no schema metadata)."""
    arrays = []
    for f in schema:
        col = table.column(f.name)
        arrays.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema.remove_metadata())


def read_current(engine: Engine, tplan: TablePlan, ids: list) -> pa.Table:
    """The session's rows of one table now (the extract path), in snapshot schema."""
    schema = tplan.arrow_schema()
    batches = [b.select(schema.names) for b in stream_batches(engine, tplan, ids)]
    return pa.Table.from_batches(batches, schema=schema)


def _keys(table: pa.Table, key: list[str]) -> list[tuple]:
    return list(zip(*[table.column(c).to_pylist() for c in key], strict=True))


def _member(table: pa.Table, key: list[str], other: pa.Table) -> np.ndarray:
    """Per row of `table`: is its key among `other`'s keys?"""
    if table.num_rows == 0:
        return np.zeros(0, dtype=bool)
    if other.num_rows == 0:
        return np.zeros(table.num_rows, dtype=bool)
    if len(key) == 1:
        values = other.column(key[0]).combine_chunks()
        values = values.cast(table.column(key[0]).type)
        hits = pc.is_in(table.column(key[0]), value_set=values)
        return hits.to_numpy(zero_copy_only=False).astype(bool)
    wanted = set(_keys(other, key))
    return np.array([k in wanted for k in _keys(table, key)], dtype=bool)


def _unique_keys(table: pa.Table, key: list[str]) -> bool:
    if len(key) == 1:
        return pc.count_distinct(table.column(key[0])).as_py() == table.num_rows
    return len(set(_keys(table, key))) == table.num_rows


def _differs(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    same = pc.fill_null(pc.equal(a, b), False)
    same = pc.or_(same, pc.and_(pc.is_null(a), pc.is_null(b)))
    if pa.types.is_floating(a.type):
        same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return ~same.to_numpy(zero_copy_only=False).astype(bool)


@dataclass
class TableDiff:
    upserts: pa.Table  # added and changed rows, whole rows
    deleted: pa.Table  # primary keys of the deleted rows
    added: int
    changed: int

    @property
    def empty(self) -> bool:
        return self.upserts.num_rows == 0 and self.deleted.num_rows == 0


def diff_table(base: pa.Table, current: pa.Table, key: Sequence[str]) -> TableDiff:
    """Rows added, rows changed (any column), keys deleted: `base` -> `current` (same schema)."""
    key = list(key)
    for name, t in (("the base version", base), ("the current rows", current)):
        if not _unique_keys(t, key):
            raise BackupError(f"duplicate primary keys ({', '.join(key)}) in {name}")
    in_base = _member(current, key, base)
    in_current = _member(base, key, current)
    added = current.filter(pa.array(~in_base))
    deleted = base.filter(pa.array(~in_current)).select(key)
    cur = sort_by_key(current.filter(pa.array(in_base)), key)
    old = sort_by_key(base.filter(pa.array(in_current)), key)
    mask = np.zeros(cur.num_rows, dtype=bool)
    for name in cur.column_names:
        a, b = cur.column(name), old.column(name)
        if not a.equals(b):
            mask |= _differs(a, b)
    changed = cur.filter(pa.array(mask))
    upserts = pa.concat_tables([added, changed]) if changed.num_rows else added
    return TableDiff(upserts, deleted, added.num_rows, changed.num_rows)


def apply_changes(
    state: pa.Table,
    upserts: pa.Table,
    deleted: pa.Table,
    key: Sequence[str],
    *,
    changed_rows: int,
    where: str,
) -> pa.Table:
    """`state` with the deleted keys removed and the upserts put in (replacing changed rows).
    The upserts are the added rows, then the `changed_rows` changed ones (diff_table's order,
    kept in the file). Every deleted and every changed key must be in the base, no added one;
    else ChainError naming `where`."""
    key = list(key)
    upserts = conform(upserts, state.schema)
    hit_deleted = _member(state, key, deleted)
    hit_upserts = _member(state, key, upserts)
    added = upserts.num_rows - changed_rows
    upserts_there = _member(upserts, key, state)  # per upsert row: is its key in the base?
    if (
        int(hit_deleted.sum()) != deleted.num_rows
        or added < 0
        or bool(upserts_there[:added].any())
        or not bool(upserts_there[added:].all())
    ):
        raise ChainError(
            f"{where} does not apply to its base: {int(hit_deleted.sum())} of "
            f"{deleted.num_rows} deleted keys and {int(hit_upserts.sum())} of {changed_rows} "
            "changed rows found there"
        )
    kept = state.filter(pa.array(~(hit_deleted | hit_upserts)))
    return sort_by_key(pa.concat_tables([kept, upserts]), key)
