"""Rows are put in key order before a restore inserts them (the order the read-back compares in)."""

import pyarrow as pa

from htd_pipelines.dialects.arrow_rows import sort_by_key


def test_rows_out_of_key_order_are_sorted_and_rows_in_order_are_left_as_they_are() -> None:
    table = pa.table({"id": [3, 1, 2], "v": ["c", "a", "b"]})
    assert sort_by_key(table, ["id"]).to_pydict() == {"id": [1, 2, 3], "v": ["a", "b", "c"]}
    ordered = pa.table({"id": [1, 2, 2, 5], "v": ["a", "b", "c", "d"]})
    assert sort_by_key(ordered, ["id"]) is ordered  # nothing gathered when nothing moves


def test_composite_and_text_keys_sort_by_bytes_with_nulls_last() -> None:
    table = pa.table(
        {
            "a": ["b", "B", "b", None, "ä"],
            "n": [2, 9, 1, 0, 0],
            "v": [1, 2, 3, 4, 5],
        }
    )
    out = sort_by_key(table, ["a", "n"])
    assert out.column("a").to_pylist() == ["B", "b", "b", "ä", None]  # byte order, as "C"
    assert out.column("v").to_pylist() == [2, 3, 1, 5, 4]
    assert sort_by_key(out, ["a", "n"]) is out
    ints_with_null = pa.table({"id": pa.array([2, None, 1], pa.int64())})
    assert sort_by_key(ints_with_null, ["id"]).column("id").to_pylist() == [1, 2, None]
