"""Unit tests of key order and row comparison on Arrow tables built here
(htd_pipelines.dialects.arrow_rows): no database, no Dagster."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pyarrow as pa
import pytest

from htd_pipelines.dialects.arrow_rows import align_by_key, differences, rows_to_batch, sort_by_key


def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


# -- sort_by_key ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        pa.table({"id": [1, 2, 2, 5, 9], "v": ["a", "b", "c", "d", "e"]}),
        pa.table({"id": pa.array([1, 3, 7], pa.int16()), "v": [3, 2, 1]}),
        pa.table({"name": ["A", "B", "a", "b"], "v": [1, 2, 3, 4]}),
        pa.table({"a": [1, 1, 2, 2], "b": ["x", "y", "a", "b"]}),
        pa.table({"id": [1, 2, None], "v": [0, 0, 0]}),
        pa.table({"id": [5], "v": [1]}),
        pa.table({"id": pa.array([], pa.int64())}),
    ],
    ids=["int", "int16", "text", "composite", "nulls-last", "one-row", "empty"],
)
def test_already_sorted_table_is_returned_as_is(table: pa.Table) -> None:
    key = ["a", "b"] if "a" in table.column_names else [table.column_names[0]]
    assert sort_by_key(table, key) is table


def test_chunked_sorted_table_is_returned_as_is() -> None:
    table = pa.concat_tables([pa.table({"id": [1, 2]}), pa.table({"id": [3, 4]})])
    assert table.column("id").num_chunks == 2
    assert sort_by_key(table, ["id"]) is table


def test_unsorted_rows_move_whole() -> None:
    table = pa.table({"id": [3, 1, 2], "name": ["c", "a", "b"], "n": [30, 10, 20]})
    out = sort_by_key(table, ["id"])
    assert out is not table
    assert rows(out) == [
        {"id": 1, "name": "a", "n": 10},
        {"id": 2, "name": "b", "n": 20},
        {"id": 3, "name": "c", "n": 30},
    ]
    assert rows(table)[0]["id"] == 3  # the input is untouched


def test_composite_key_sorts_by_first_then_second_column() -> None:
    table = pa.table({"a": [2, 1, 2, 1], "b": ["b", "z", "a", "y"], "v": [1, 2, 3, 4]})
    out = sort_by_key(table, ["a", "b"])
    assert [(r["a"], r["b"], r["v"]) for r in rows(out)] == [
        (1, "y", 4),
        (1, "z", 2),
        (2, "a", 3),
        (2, "b", 1),
    ]
    # the key's column order decides, not the table's
    out = sort_by_key(table, ["b", "a"])
    assert [r["b"] for r in rows(out)] == ["a", "b", "y", "z"]


def test_text_is_sorted_in_byte_order() -> None:
    words = ["b", "a", "B", "é", "z", "Z", "", "ab", "a b", "Ä", "10", "9"]
    table = pa.table({"s": words})
    out = sort_by_key(table, ["s"]).column("s").to_pylist()
    assert out == sorted(words, key=lambda w: w.encode("utf-8"))
    # not a locale or case-insensitive order
    assert out.index("Z") < out.index("a")
    assert out.index("z") < out.index("é")
    assert out.index("10") < out.index("9")


def test_nulls_sort_last_and_equal_keys_keep_their_order() -> None:
    table = pa.table({"k": [None, 2, 1, None, 2, 1], "seq": [0, 1, 2, 3, 4, 5]})
    out = sort_by_key(table, ["k"])
    assert [(r["k"], r["seq"]) for r in rows(out)] == [
        (1, 2),
        (1, 5),
        (2, 1),
        (2, 4),
        (None, 0),
        (None, 3),
    ]


def test_sorted_except_for_a_trailing_null_is_detected() -> None:
    table = pa.table({"id": [None, 1, 2]})
    assert sort_by_key(table, ["id"]).column("id").to_pylist() == [1, 2, None]


def test_large_shuffled_table_is_sorted_like_python() -> None:
    rng = random.Random(7)
    ids = list(range(500))
    rng.shuffle(ids)
    table = pa.table({"id": ids, "twice": [2 * i for i in ids]})
    out = sort_by_key(table, ["id"])
    assert out.column("id").to_pylist() == list(range(500))
    assert out.column("twice").to_pylist() == [2 * i for i in range(500)]


# -- align_by_key ---------------------------------------------------------------------------------


def test_align_returns_both_as_is_when_already_aligned() -> None:
    a = pa.table({"id": [2, 1], "v": ["x", "y"]})
    b = pa.table({"id": [2, 1], "v": ["x", "Y"]})
    ea, eb = align_by_key(a, b, ["id"])
    assert ea is a and eb is b  # same key order (even unsorted): nothing to sort


def test_align_sorts_what_is_out_of_order() -> None:
    expected = pa.table({"id": [3, 1, 2], "v": ["c", "a", "b"]})
    actual = pa.table({"id": [2, 3, 1], "v": ["b", "c", "A"]})
    ea, eb = align_by_key(expected, actual, ["id"])
    assert ea.column("id").to_pylist() == [1, 2, 3]
    assert eb.column("id").to_pylist() == [1, 2, 3]
    assert eb.column("v").to_pylist() == ["A", "b", "c"]


def test_align_keeps_a_sorted_actual_as_is() -> None:
    expected = pa.table({"id": [2, 1], "v": [2, 1]})
    actual = pa.table({"id": [1, 2], "v": [1, 2]})
    ea, eb = align_by_key(expected, actual, ["id"])
    assert eb is actual
    assert ea.column("id").to_pylist() == [1, 2]


def test_align_composite_key() -> None:
    expected = pa.table({"a": [1, 1, 0], "b": [2, 1, 9], "v": [12, 11, 9]})
    actual = pa.table({"a": [0, 1, 1], "b": [9, 2, 1], "v": [9, 12, 11]})
    ea, eb = align_by_key(expected, actual, ["a", "b"])
    assert rows(ea) == rows(eb)
    assert differences(ea, eb, ["a", "b"]) == []


# -- differences ----------------------------------------------------------------------------------


def test_identical_tables_have_no_differences() -> None:
    t = pa.table({"id": [1, 2], "v": ["a", None], "f": [1.5, None]})
    assert differences(t, pa.table(t.to_pydict()), ["id"]) == []


def test_differences_report_key_column_expected_and_actual() -> None:
    expected = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"], "n": [10, 20, 30]})
    actual = pa.table({"id": [1, 2, 3], "name": ["a", "B", "c"], "n": [10, 20, 31]})
    assert differences(expected, actual, ["id"]) == [
        ({"id": 2}, "name", "b", "B"),
        ({"id": 3}, "n", 30, 31),
    ]


def test_differences_with_a_composite_key() -> None:
    expected = pa.table({"s": [7, 7], "n": [1, 2], "v": ["x", "y"]})
    actual = pa.table({"s": [7, 7], "n": [1, 2], "v": ["x", "z"]})
    assert differences(expected, actual, ["s", "n"]) == [({"s": 7, "n": 2}, "v", "y", "z")]


def test_row_count_mismatch_is_one_star_entry() -> None:
    expected = pa.table({"id": [1, 2, 3]})
    actual = pa.table({"id": [1, 2]})
    assert differences(expected, actual, ["id"]) == [({}, "*", 3, 2)]


def test_null_versus_value_differs_both_ways_and_null_versus_null_does_not() -> None:
    expected = pa.table({"id": [1, 2, 3, 4], "v": [None, "x", None, ""]})
    actual = pa.table({"id": [1, 2, 3, 4], "v": ["x", None, None, None]})
    assert differences(expected, actual, ["id"]) == [
        ({"id": 1}, "v", None, "x"),
        ({"id": 2}, "v", "x", None),
        ({"id": 4}, "v", "", None),  # empty text is not NULL
    ]


def test_differences_stop_at_the_limit() -> None:
    expected = pa.table({"id": list(range(50)), "v": [0] * 50})
    actual = pa.table({"id": list(range(50)), "v": [1] * 50})
    assert len(differences(expected, actual, ["id"])) == 20
    out = differences(expected, actual, ["id"], limit=3)
    assert [d[0]["id"] for d in out] == [0, 1, 2]


def test_differences_across_chunk_boundaries() -> None:
    expected = pa.concat_tables(
        [pa.table({"id": [1, 2], "v": [1, 2]}), pa.table({"id": [3], "v": [3]})]
    )
    actual = pa.table({"id": [1, 2, 3], "v": [1, 2, 4]})
    assert differences(expected, actual, ["id"]) == [({"id": 3}, "v", 3, 4)]


def test_nan_versus_nan_is_not_a_difference() -> None:
    expected = pa.table({"id": [1, 2], "f": [float("nan"), 1.0]})
    actual = pa.table({"id": [1, 2], "f": [float("nan"), 1.0]})
    assert differences(expected, actual, ["id"]) == []


def test_nan_versus_number_is_a_difference() -> None:
    expected = pa.table({"id": [1], "f": [float("nan")]})
    actual = pa.table({"id": [1], "f": [1.0]})
    [(key, column, _, got)] = differences(expected, actual, ["id"])
    assert (key, column, got) == ({"id": 1}, "f", 1.0)


# -- rows_to_batch --------------------------------------------------------------------------------

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("amount", pa.decimal128(10, 2)),
        ("at", pa.timestamp("us")),
        ("at_utc", pa.timestamp("us", tz="UTC")),
        ("day", pa.date32()),
        ("blob", pa.binary()),
        ("note", pa.string()),
        ("t", pa.time64("us")),
    ]
)


def test_rows_to_batch_with_python_values() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678901)
    batch = rows_to_batch(
        [
            (
                1,
                Decimal("12.34"),
                when,
                when,
                dt.date(2024, 2, 29),
                b"\x00\xff",
                "café",
                dt.time(1, 2, 3),
            ),
            (2, None, None, None, None, None, None, None),
        ],
        SCHEMA,
    )
    assert batch.schema == SCHEMA
    first, second = batch.to_pylist()
    assert first["amount"] == Decimal("12.34")
    assert first["at"] == when
    assert first["at_utc"] == when.replace(tzinfo=dt.UTC)  # naive values are taken as UTC
    assert first["day"] == dt.date(2024, 2, 29)
    assert first["blob"] == b"\x00\xff"
    assert first["note"] == "café"
    assert first["t"] == dt.time(1, 2, 3)
    assert all(v is None for k, v in second.items() if k != "id")


def test_rows_to_batch_normalizes_driver_values() -> None:
    tz8 = dt.timezone(dt.timedelta(hours=8))
    batch = rows_to_batch(
        [
            (
                1,
                Decimal("0.5"),
                dt.datetime(2024, 1, 2, 3, 0, tzinfo=tz8),  # aware into a naive column: UTC
                "2024-05-06T07:08:09",  # SQLite text into a timestamp
                "2024-05-06 00:00:00",  # text into a date
                memoryview(b"mv"),  # psycopg bytea
                b"caf\xc3\xa9",  # bytes into text
                dt.timedelta(hours=13, minutes=1),  # MySQL TIME
            )
        ],
        SCHEMA,
    )
    [row] = batch.to_pylist()
    assert row["amount"] == Decimal("0.50")
    assert row["at"] == dt.datetime(2024, 1, 1, 19, 0)
    assert row["at_utc"] == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    assert row["day"] == dt.date(2024, 5, 6)
    assert row["blob"] == b"mv"
    assert row["note"] == "café"
    assert row["t"] == dt.time(13, 1)


def test_rows_to_batch_of_no_rows_has_the_schema() -> None:
    batch = rows_to_batch([], SCHEMA)
    assert batch.num_rows == 0
    assert batch.schema == SCHEMA


def test_rows_to_batch_refuses_a_value_that_does_not_fit() -> None:
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError)):
        rows_to_batch([(1, Decimal("123456789.123"), None, None, None, None, None, None)], SCHEMA)
