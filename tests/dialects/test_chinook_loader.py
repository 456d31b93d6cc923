"""The Chinook loader and the per-test database fixtures, on every dialect."""

from __future__ import annotations

import sqlalchemy as sa
import yaml

from htd_pipelines.dialects.engine import create_engine
from tests.support.chinook import (
    CHINOOK_NAMES,
    CHINOOK_ROW_COUNTS,
    chinook_relations_yaml,
    load_chinook,
    snapshot_database,
    split_statements,
    table_counts,
)


def test_db_url_is_a_fresh_empty_database(db_url: str, dialect: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == []
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        engine.dispose()
    assert snapshot_database(db_url) == {}


def test_chinook_loads_with_documented_counts(db_url: str, dialect: str) -> None:
    load_chinook(db_url)
    names = CHINOOK_NAMES[dialect]

    counts = table_counts(db_url)
    assert counts == {names[t]: n for t, n in CHINOOK_ROW_COUNTS.items()}

    snap = snapshot_database(db_url)
    assert len(snap) == 11
    assert {t: len(rows) for t, rows in snap.items()} == counts
    # Sorted by primary key, all columns.
    invoice_ids = [row[0] for row in snap[names["invoice"]]]
    assert invoice_ids == sorted(invoice_ids) == list(range(1, 413))
    assert len(snap[names["customer"]][0]) == 13

    # Quoting survived: doubled quotes, backslashes (MariaDB) and trailing spaces (PostgreSQL).
    artists = {row[1] for row in snap[names["artist"]]}
    assert "Guns N' Roses" in artists
    tracks = {row[0]: row[1] for row in snap[names["track"]]}
    assert tracks[3435] == "Cavalleria Rusticana \\ Act \\ Intermezzo Sinfonico"
    assert snap[names["customer"]][53][5] == "Edinburgh "

    partial = snapshot_database(db_url, exclude=[names["track"], names["playlist_track"]])
    assert set(partial) == set(snap) - {names["track"], names["playlist_track"]}


def test_chinook_keys_and_invariant(db_url: str, dialect: str) -> None:
    load_chinook(db_url)
    n = CHINOOK_NAMES[dialect]
    engine = create_engine(db_url)
    try:
        q = engine.dialect.identifier_preparer.quote
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            fks = insp.get_foreign_keys(n["invoice_line"])
            assert {fk["referred_table"] for fk in fks} == {n["invoice"], n["track"]}
            assert insp.get_pk_constraint(n["customer"])["constrained_columns"] == [
                n["customer_id"]
            ]
            # Known invariant: every invoice total equals the sum of its lines.
            mismatches = conn.exec_driver_sql(
                f"SELECT i.{q(n['invoice_id'])} FROM {q(n['invoice'])} i"
                f" JOIN {q(n['invoice_line'])} l ON l.{q(n['invoice_id'])} = i.{q(n['invoice_id'])}"
                f" GROUP BY i.{q(n['invoice_id'])}, i.{q(n['total'])}"
                f" HAVING ABS(SUM(l.{q(n['unit_price'])} * l.{q(n['quantity'])})"
                f" - i.{q(n['total'])}) > 0.001"
            ).all()
            assert mismatches == []
    finally:
        engine.dispose()

    # The registry YAML names real tables/columns of this dialect.
    spec = yaml.safe_load(chinook_relations_yaml(dialect))["types"]["customer"]
    assert spec["root"] == {"table": n["customer"], "key": n["customer_id"]}
    assert spec["tables"][1] == {
        "table": n["invoice_line"],
        "key": n["invoice_id"],
        "parent": n["invoice"],
    }


def test_split_statements_respects_literals() -> None:
    script = (
        "-- comment; with semicolon\n"
        "CREATE TABLE t (a NVARCHAR(10));\n"
        "INSERT INTO t VALUES (N'a;b'), (N'Guns N'' Roses'), ('x\\'), (N'Edinburgh ');\n"
        "/* block ; comment */ INSERT INTO t VALUES ('end')"
    )
    pg = split_statements(script, dialect="postgresql")
    assert pg == [
        "CREATE TABLE t (a NVARCHAR(10))",
        "INSERT INTO t VALUES ('a;b'), ('Guns N'' Roses'), ('x\\'), ('Edinburgh ')",
        "INSERT INTO t VALUES ('end')",
    ]
    my = split_statements(script, dialect="mariadb")
    assert my[0] == "CREATE TABLE t (a VARCHAR(10))"
    assert my[1] == pg[1]
