"""Every column type comes back exactly, whichever write path the restore takes.

Identity columns (PostgreSQL GENERATED ALWAYS AS IDENTITY) get their original values back;
generated (computed) columns are recomputed by the database and must equal what was backed up.

On PostgreSQL a table whose columns all have a binary COPY form (`postgresql.binary_copy_types`) is
written with COPY (FORMAT binary); a table with any other type (uuid, interval, arrays, timetz,
unbounded numeric, real) goes through COPY csv; HTD_FAST_PATH=0 uses INSERTs. MariaDB and
SQLite always use INSERTs. Each path must give back the session as it was, value for value.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from htd_pipelines.api import list_backups
from htd_pipelines.dialects import postgresql, write
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.restore import restore_backup
from htd_pipelines.store.catalog import CATALOG_TABLES
from tests.support.chinook import snapshot_database
from tests.support.env import make_env

REGISTRY = """\
types:
  holder:
    root: {table: t_root, key: id}
    tables:
      - {table: t_plain, key: root_id}
      - {table: t_other, key: root_id}
"""

DDL = {
    "postgresql": [
        "CREATE TABLE t_root (id bigserial PRIMARY KEY, name text NOT NULL)",
        "CREATE TABLE t_plain (id serial PRIMARY KEY, root_id bigint NOT NULL REFERENCES"
        " t_root (id), i2 smallint, i8 bigint, j jsonb, js json, d date, tm time,"
        " ts timestamp, tstz timestamptz, n numeric(20, 6), c char(5), v varchar(40),"
        " b bytea, f float8, flag boolean)",
        "CREATE TABLE t_other (id integer PRIMARY KEY, root_id bigint NOT NULL REFERENCES"
        " t_root (id), u uuid, iv interval, arr integer[], r real, big numeric, tt timetz,"
        " ident bigint GENERATED ALWAYS AS IDENTITY, twice integer GENERATED ALWAYS AS"
        " (id * 2) STORED)",
    ],
    "mysql": [
        "CREATE TABLE t_root (id BIGINT AUTO_INCREMENT PRIMARY KEY, name TEXT NOT NULL)",
        "CREATE TABLE t_plain (id INT AUTO_INCREMENT PRIMARY KEY, root_id BIGINT NOT NULL,"
        " i2 SMALLINT, i8 BIGINT UNSIGNED, j JSON, js LONGTEXT, d DATE, tm TIME(6),"
        " ts DATETIME(6), tstz TIMESTAMP(6) NULL, n DECIMAL(20, 6), c CHAR(5),"
        " v VARCHAR(40), b BLOB, f DOUBLE, flag BOOL,"
        " FOREIGN KEY (root_id) REFERENCES t_root (id))",
        "CREATE TABLE t_other (id INT PRIMARY KEY, root_id BIGINT NOT NULL, u CHAR(36),"
        " iv VARCHAR(20), arr TEXT, r FLOAT, big DECIMAL(65, 30), tt TIME,"
        " twice INT AS (id * 2) STORED, FOREIGN KEY (root_id) REFERENCES t_root (id))",
    ],
    "sqlite": [
        "CREATE TABLE t_root (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL)",
        "CREATE TABLE t_plain (id INTEGER PRIMARY KEY, root_id INTEGER NOT NULL REFERENCES"
        " t_root (id), i2 SMALLINT, i8 BIGINT, j JSON, js TEXT, d DATE, tm TIME,"
        " ts DATETIME, tstz DATETIME, n NUMERIC(20, 6), c CHAR(5), v VARCHAR(40), b BLOB,"
        " f FLOAT, flag BOOLEAN)",
        "CREATE TABLE t_other (id INTEGER PRIMARY KEY, root_id INTEGER NOT NULL REFERENCES"
        " t_root (id), u TEXT, iv TEXT, arr TEXT, r REAL, big NUMERIC, tt TEXT,"
        " twice INTEGER GENERATED ALWAYS AS (id * 2) STORED)",
    ],
}

PLAIN = [  # (id, i2, i8, j, js, d, tm, ts, tstz, n, c, v, b, f, flag)
    (
        1,
        -32768,
        9007199254740993,
        '{"a": [1, 2.5, null], "ü": "中文"}',
        '{"k": "v"}',
        "2024-02-29",
        "23:59:59.123456",
        "2024-02-29 12:34:56.654321",
        "2024-03-01 00:00:00.000001",
        "-12345678901234.567891",
        "ab",
        "naïve ☃",
        b"\x00\xff\\x\n,\"'",
        -0.1,
        True,
    ),
    (2,) + (None,) * 14,
    (3, 0, 0, "[]", "null", "1970-01-01", "00:00:00", "1970-01-01 00:00:00",
     "1999-12-31 23:59:59", "0.000001", "x\ty", "", b"", 1e308, False),
    # text that CSV readers like to take for NULL must stay text
    (4, 1, 1, '"NA"', "null", None, None, None, None, None, "NULL", "N/A", None, -1e-300,
     None),
]  # fmt: skip

OTHER = {  # dialect -> rows (id, u, iv, arr, r, big, tt)
    "postgresql": [
        (1, "0f8fad5b-d9cb-469f-a165-70867728950e", "1 day 02:03:04", "{1,NULL,3}", 1.5,
         "3.14159265358979323846264338327950288419716939937510", "12:00:00+05:30"),
        (2, None, None, None, None, None, None),
    ],
    "mysql": [
        (1, "0f8fad5b-d9cb-469f-a165-70867728950e", "P1DT2H3M4S", "[1,null,3]", 1.5,
         "31415926535897932384626433832.795028841971693993751058209749", "-838:59:59"),
        (2, None, None, None, None, None, None),
    ],
    "sqlite": [
        (1, "0f8fad5b-d9cb-469f-a165-70867728950e", "P1D", "[1,null,3]", 1.5,
         "3.14159", "12:00:00"),
        (2, None, None, None, None, None, None),
    ],
}  # fmt: skip


@pytest.fixture
def typed_env(monkeypatch, db_url, tmp_path):
    registry = tmp_path / "types.yaml"
    registry.write_text(REGISTRY)
    env = make_env(monkeypatch, db_url, tmp_path, str(registry))
    name = env.engine.dialect.name
    with env.engine.begin() as conn:
        for stmt in DDL[name]:
            conn.exec_driver_sql(stmt)
        for root in (1, 2):
            conn.execute(
                sa.text("INSERT INTO t_root (id, name) VALUES (:i, :n)"),
                {"i": root, "n": f"root {root}"},
            )
        cols = "id, root_id, i2, i8, j, js, d, tm, ts, tstz, n, c, v, b, f, flag"
        marks = ", ".join(f":p{i}" for i in range(16))
        for root in (1, 2):
            for row in PLAIN:
                values = (row[0] + 10 * root, root, *row[1:])
                conn.execute(
                    sa.text(f"INSERT INTO t_plain ({cols}) VALUES ({marks})"),
                    {f"p{i}": v for i, v in enumerate(values)},
                )
            for row in OTHER[name]:
                values = (row[0] + 10 * root, root, *row[1:])
                conn.execute(
                    sa.text(
                        "INSERT INTO t_other (id, root_id, u, iv, arr, r, big, tt) "
                        "VALUES (:p0, :p1, :p2, :p3, :p4, :p5, :p6, :p7)"
                    ),
                    {f"p{i}": v for i, v in enumerate(values)},
                )
    return env


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_every_column_type_round_trips(typed_env, monkeypatch, fast_path) -> None:
    monkeypatch.setenv("HTD_FAST_PATH", fast_path)
    env = typed_env
    before = snapshot_database(env.url, exclude=CATALOG_TABLES)
    result = env.run_backup([1], type_name="holder")
    assert result.success
    assert env.count("t_plain", "WHERE root_id = 1") == 0
    assert env.count("t_plain", "WHERE root_id = 2") == len(PLAIN)  # the other session stays
    [rec] = list_backups("holder", 1)
    restored = restore_backup(
        env.engine, load_registry(env.relations_file), rec.id, uid="t", run_id="r"
    )
    assert restored.corrected == {}  # nothing had to be put back after the insert
    assert restored.rows == {"t_root": 1, "t_plain": len(PLAIN), "t_other": 2}
    assert snapshot_database(env.url, exclude=CATALOG_TABLES) == before
    if env.engine.dialect.name == "postgresql":  # the identity hands out fresh values only
        with env.engine.begin() as conn:
            top = conn.execute(sa.text("SELECT max(ident) FROM t_other")).scalar_one()
            new = conn.execute(
                sa.text("INSERT INTO t_other (id, root_id) VALUES (99, 1) RETURNING ident")
            ).scalar_one()
        assert new > top


def test_binary_copy_is_chosen_only_for_types_it_writes_exactly(typed_env, dialect) -> None:
    """PostgreSQL: t_plain goes through COPY (FORMAT binary), t_other (uuid, interval, arrays,
    real, unbounded numeric, timetz) through COPY csv. Other dialects never use COPY."""
    from htd_pipelines.registry.resolved import resolve_type

    env = typed_env
    rtype = resolve_type(env.engine, load_registry(env.relations_file).get("holder"))
    with env.engine.connect() as conn:
        chosen = {
            t.name: write.use_copy(conn) and postgresql.binary_copy_types(conn, t, t.arrow_schema())
            for t in rtype.tables
        }
    if dialect == "postgresql":
        assert chosen == {"t_root": True, "t_plain": True, "t_other": False}
    else:
        assert chosen == {"t_root": False, "t_plain": False, "t_other": False}


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_the_binary_read_back_sees_any_changed_value(typed_env, dialect) -> None:
    """PostgreSQL's restore compares the read-back bytes of a binary-COPY table with what it
    sent (postgresql.same_as_sent) before decoding anything: equal only when every value is."""
    from htd_pipelines.registry.resolved import resolve_type

    env = typed_env
    rtype = resolve_type(env.engine, load_registry(env.relations_file).get("holder"))
    plain = next(t for t in rtype.tables if t.name == "t_plain")
    with env.engine.connect() as conn:
        rows = write.read_rows(conn, plain, [1])
    with env.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM t_plain WHERE root_id = 1"))
        sent = write.insert_rows(conn, plain, rows)
        assert sent is not None and postgresql.same_as_sent(conn, plain, [1], sent)
        for change in (
            "UPDATE t_plain SET n = n + 0.000001 WHERE id = 11",
            "UPDATE t_plain SET tstz = tstz + interval '1 microsecond' WHERE id = 11",
            'UPDATE t_plain SET j = \'{"a": [1, 2.5, null], "ü": "中文 "}\' WHERE id = 11',
            "UPDATE t_plain SET v = NULL WHERE id = 13",
        ):
            savepoint = conn.begin_nested()
            conn.execute(sa.text(change))
            assert not postgresql.same_as_sent(conn, plain, [1], sent), change
            savepoint.rollback()
        assert postgresql.same_as_sent(conn, plain, [1], sent)
        conn.rollback()


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_the_read_back_digest_reads_every_row_and_reports_server_errors(typed_env, dialect) -> None:
    """The read-back's low-level COPY reader hashes exactly the bytes psycopg's Copy yields;
    a query failing on the server mid-copy raises its own error, and the transaction goes on after
    a rollback to its savepoint."""
    import hashlib

    import psycopg

    env = typed_env
    with env.engine.begin() as conn:
        raw = conn.connection.driver_connection
        sql = "COPY (SELECT g, repeat('x', g % 50) FROM generate_series(1, 20000) g) TO STDOUT"
        expected = hashlib.sha256()
        with raw.cursor() as cur, cur.copy(sql + " (FORMAT binary)") as copy:
            for chunk in copy:
                expected.update(chunk)
        assert (
            postgresql._copy_out_sha256(raw.pgconn, sql + " (FORMAT binary)")
            == expected.hexdigest()
        )
        failing = "COPY (SELECT 1 / (20000 - g) FROM generate_series(1, 30000) g) TO STDOUT"
        for bad, error, message in (
            (failing, psycopg.errors.DivisionByZero, "division by zero"),
            ("COPY no_such_table TO STDOUT", psycopg.errors.UndefinedTable, "no_such_table"),
        ):
            savepoint = conn.begin_nested()
            with pytest.raises(error, match=message):
                postgresql._copy_out_sha256(raw.pgconn, bad)
            savepoint.rollback()
        assert (
            postgresql._copy_out_sha256(raw.pgconn, sql + " (FORMAT binary)")
            == expected.hexdigest()
        )
        assert conn.execute(sa.text("SELECT count(*) FROM t_plain")).scalar() > 0
        conn.rollback()
