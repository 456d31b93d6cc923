"""Unit tests of table diffs and digests (htd_pipelines.versions.diff) on Arrow tables built
here: no database, no Dagster."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from htd_pipelines.backup import BackupError
from htd_pipelines.dialects.arrow_rows import sort_by_key
from htd_pipelines.versions.diff import ChainError, apply_changes, diff_table, row_digest

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])


def table(rows: list[tuple], schema: pa.Schema = SCHEMA) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema)


BASE = table([(1, "a", 1.0), (2, "b", 2.0), (3, "c", None), (4, "d", 4.0), (5, "e", 5.0)])
# 2 changed (name), 3 changed (NULL -> value), 4 deleted, 6 and 7 added, 1 and 5 untouched
CURRENT = table(
    [(7, "g", 7.0), (5, "e", 5.0), (3, "c", 3.5), (2, "B", 2.0), (1, "a", 1.0), (6, "f", None)]
)


def apply(base: pa.Table, d, key: list[str], where: str = "inst 42 v3") -> pa.Table:
    return apply_changes(base, d.upserts, d.deleted, key, changed_rows=d.changed, where=where)


# -- diff_table -----------------------------------------------------------------------------------


def test_diff_finds_added_changed_and_deleted_rows() -> None:
    d = diff_table(BASE, CURRENT, ["id"])
    assert (d.added, d.changed) == (2, 2)
    assert not d.empty
    assert d.deleted.column_names == ["id"]
    assert d.deleted.column("id").to_pylist() == [4]
    upserts = {r["id"]: r for r in d.upserts.to_pylist()}
    assert set(upserts) == {2, 3, 6, 7}
    assert upserts[2] == {"id": 2, "name": "B", "score": 2.0}  # whole rows
    assert upserts[3] == {"id": 3, "name": "c", "score": 3.5}
    assert upserts[6] == {"id": 6, "name": "f", "score": None}


def test_diff_then_apply_rebuilds_the_current_rows() -> None:
    d = diff_table(BASE, CURRENT, ["id"])
    rebuilt = apply(BASE, d, ["id"])
    assert rebuilt.equals(sort_by_key(CURRENT, ["id"]))
    assert rebuilt.column("id").to_pylist() == [1, 2, 3, 5, 6, 7]


def test_identical_tables_give_an_empty_diff_that_applies_as_a_no_op() -> None:
    shuffled = BASE.take([4, 2, 0, 3, 1])  # order does not matter
    d = diff_table(BASE, shuffled, ["id"])
    assert d.empty and (d.added, d.changed) == (0, 0)
    assert apply(BASE, d, ["id"]).equals(BASE)


def test_value_to_null_and_nan_to_nan() -> None:
    base = table([(1, "a", float("nan")), (2, "b", 2.0), (3, None, 3.0)])
    current = table([(1, "a", float("nan")), (2, "b", None), (3, "", 3.0)])
    d = diff_table(base, current, ["id"])
    # NaN == NaN is no change; 2.0 -> NULL and NULL -> "" are
    assert d.changed == 2
    assert sorted(d.upserts.column("id").to_pylist()) == [2, 3]


def test_everything_deleted_and_everything_new() -> None:
    empty = BASE.slice(0, 0)
    gone = diff_table(BASE, empty, ["id"])
    assert gone.deleted.num_rows == 5 and gone.upserts.num_rows == 0
    assert apply(BASE, gone, ["id"]).num_rows == 0
    fresh = diff_table(empty, BASE, ["id"])
    assert fresh.added == 5 and fresh.deleted.num_rows == 0
    assert apply(empty, fresh, ["id"]).equals(BASE)


def test_round_trip_with_a_composite_key() -> None:
    schema = pa.schema([("s", pa.int32()), ("n", pa.int32()), ("v", pa.string())])
    base = table([(1, 1, "x"), (1, 2, "y"), (2, 1, "z")], schema)
    current = table([(1, 2, "Y"), (2, 1, "z"), (2, 2, "new")], schema)
    d = diff_table(base, current, ["s", "n"])
    assert (d.added, d.changed) == (1, 1)
    assert d.deleted.to_pylist() == [{"s": 1, "n": 1}]
    assert apply(base, d, ["s", "n"]).equals(sort_by_key(current, ["s", "n"]))


def test_random_edits_round_trip() -> None:
    rng = random.Random(3)
    base_rows = [(i, f"n{i}", float(i)) for i in range(200)]
    current_rows = []
    for i, name, score in base_rows:
        roll = rng.random()
        if roll < 0.1:
            continue  # deleted
        if roll < 0.3:
            name = name + "!"
        current_rows.append((i, name, score))
    current_rows += [(1000 + i, "new", None) for i in range(15)]
    rng.shuffle(current_rows)
    base, current = table(base_rows), table(current_rows)
    d = diff_table(base, current, ["id"])
    assert d.added == 15
    assert apply(base, d, ["id"]).equals(sort_by_key(current, ["id"]))


def test_duplicate_keys_are_refused() -> None:
    dup = table([(1, "a", 1.0), (1, "b", 2.0)])
    with pytest.raises(BackupError, match="duplicate primary keys.*current rows"):
        diff_table(BASE, dup, ["id"])
    with pytest.raises(BackupError, match="duplicate primary keys.*base version"):
        diff_table(dup, BASE, ["id"])


# -- apply_changes on a wrong base ----------------------------------------------------------------


def test_apply_on_a_base_without_a_deleted_key_raises_chain_error() -> None:
    d = diff_table(BASE, CURRENT, ["id"])
    wrong = BASE.filter(pa.array([i != 4 for i in BASE.column("id").to_pylist()]))
    with pytest.raises(ChainError, match=r"inst 42 v3 does not apply to its base"):
        apply(wrong, d, ["id"])


def test_apply_on_a_base_without_a_changed_key_raises_chain_error() -> None:
    d = diff_table(BASE, CURRENT, ["id"])
    wrong = BASE.filter(pa.array([i != 2 for i in BASE.column("id").to_pylist()]))
    with pytest.raises(ChainError, match="inst 42 v3"):
        apply(wrong, d, ["id"])


def test_apply_on_a_base_that_already_has_an_added_key_raises_chain_error() -> None:
    d = diff_table(BASE, CURRENT, ["id"])
    wrong = pa.concat_tables([BASE, table([(6, "f", None)])])
    with pytest.raises(ChainError, match="inst 42 v3"):
        apply(wrong, d, ["id"])


def test_apply_twice_raises_chain_error() -> None:
    d = diff_table(BASE, CURRENT, ["id"])
    once = apply(BASE, d, ["id"])
    with pytest.raises(ChainError):
        apply(once, d, ["id"])


def test_apply_on_a_base_with_a_missing_changed_key_and_a_present_added_key() -> None:
    base = table([(1, "a", 1.0), (2, "b", 2.0)])
    current = table([(1, "a", 1.0), (2, "B", 2.0), (3, "c", 3.0)])
    d = diff_table(base, current, ["id"])
    assert (d.added, d.changed) == (1, 1)
    wrong = table([(1, "a", 1.0), (3, "old", 0.0)])  # no 2 (changed), has 3 (added)
    with pytest.raises(ChainError):
        apply(wrong, d, ["id"])


def test_apply_conforms_upserts_to_the_state_schema() -> None:
    d = diff_table(BASE, CURRENT, ["id"])
    narrow = d.upserts.cast(
        pa.schema([("id", pa.int32()), ("name", pa.string()), ("score", pa.float32())])
    )
    rebuilt = apply_changes(BASE, narrow, d.deleted, ["id"], changed_rows=d.changed, where="v")
    assert rebuilt.schema == BASE.schema
    assert rebuilt.equals(sort_by_key(CURRENT, ["id"]))


# -- row_digest -----------------------------------------------------------------------------------


def test_row_digest_does_not_depend_on_row_order_or_chunking() -> None:
    digest = row_digest(BASE, ["id"])
    assert row_digest(BASE.take([3, 1, 4, 0, 2]), ["id"]) == digest
    chunked = pa.concat_tables([BASE.slice(0, 2), BASE.slice(2, 1), BASE.slice(3)])
    assert chunked.column("id").num_chunks == 3
    assert row_digest(chunked, ["id"]) == digest
    assert row_digest(pa.table(BASE.to_pydict(), schema=SCHEMA), ["id"]) == digest


@pytest.mark.parametrize(
    ("row", "column", "value"),
    [
        (1, "name", "B"),
        (4, "score", 5.000001),
        (0, "id", 9),
        (2, "score", 0.0),  # NULL -> 0
        (0, "name", ""),  # "a" -> empty
    ],
)
def test_row_digest_changes_with_one_value(row: int, column: str, value: object) -> None:
    data = BASE.to_pydict()
    data[column][row] = value
    assert row_digest(pa.table(data, schema=SCHEMA), ["id"]) != row_digest(BASE, ["id"])


def test_row_digest_tells_null_from_empty_and_value_boundaries() -> None:
    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    null = table([(1, None)], schema)
    empty = table([(1, "")], schema)
    assert row_digest(null, ["id"]) != row_digest(empty, ["id"])
    ab_c = table([(1, "ab"), (2, "c")], schema)
    a_bc = table([(1, "a"), (2, "bc")], schema)
    assert row_digest(ab_c, ["id"]) != row_digest(a_bc, ["id"])


def test_row_digest_depends_on_column_names_and_types() -> None:
    renamed = BASE.rename_columns(["id", "label", "score"])
    assert row_digest(renamed, ["id"]) != row_digest(BASE, ["id"])
    retyped = BASE.cast(
        pa.schema([("id", pa.int32()), ("name", pa.string()), ("score", pa.float64())])
    )
    assert row_digest(retyped, ["id"]) != row_digest(BASE, ["id"])


def test_row_digest_of_other_column_types() -> None:
    import datetime as dt
    from decimal import Decimal

    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("d", pa.decimal128(8, 2)),
            ("b", pa.binary()),
            ("t", pa.timestamp("us")),
            ("ok", pa.bool_()),
        ]
    )
    rows = [
        (1, Decimal("1.50"), b"\x00", dt.datetime(2024, 1, 1), True),
        (2, None, None, None, None),
    ]
    one = row_digest(table(rows, schema), ["id"])
    assert one == row_digest(table(rows[::-1], schema), ["id"])
    changed = [(1, Decimal("1.51"), b"\x00", dt.datetime(2024, 1, 1), True), rows[1]]
    assert row_digest(table(changed, schema), ["id"]) != one
    flipped = [(1, Decimal("1.50"), b"\x00", dt.datetime(2024, 1, 1), False), rows[1]]
    assert row_digest(table(flipped, schema), ["id"]) != one
