"""Every SQL type comes back exactly, extreme values included, on every write path; a type or
value that cannot be carried is refused before anything is written or deleted, naming where.

Each test backs a session up (backup_sessions: extract, record, delete the source rows),
restores it (restore_backup) and compares the live tables before and after with raw SELECTs
of the server's own exact form (PostgreSQL: each row's text; MariaDB: per column, floats as
DOUBLE, BIT as a number, spatial as hex; SQLite: typeof() and the stored value), never through
our own code. `fast_path` "1" takes the dialect's fast paths (PostgreSQL ADBC read, COPY binary
and csv; MariaDB LOAD DATA LOCAL), "0" the portable ones (HTD_FAST_PATH=0). docs/types.md
lists how each type is carried.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from htd_pipelines import backup as backup_mod
from htd_pipelines.registry.arrow_types import ValueRefused
from htd_pipelines.registry.spec import RegistryError, load_registry
from htd_pipelines.restore import restore_backup
from tests.support.env import make_env

PG_ROOT = "ffffffff-0000-4000-8000-000000000001"
# BIGINT UNSIGNED: the root key (the relation id) above 2^63, another session's at 2^64 - 1
MARIA_ROOT = 18446744073709551614
SQLITE_ROOT = 1700000000000  # a millisecond epoch: no int32

MB = 1 << 20

DDL = {
    "postgresql": [
        "CREATE TYPE mood AS ENUM ('sad', 'ok', '😀', 'with space', 'quo\"te')",
        "CREATE DOMAIN posint AS integer CHECK (VALUE > 0)",
        "CREATE TABLE x_root (id uuid PRIMARY KEY, name text)",
        # every column has a binary COPY form: written with COPY (FORMAT binary)
        "CREATE TABLE x_bin (id integer PRIMARY KEY, root_id uuid NOT NULL REFERENCES x_root,"
        " i2 smallint, i4 integer, i8 bigint, r real, f float8, n numeric(38, 6),"
        " b boolean, t text, c char(10), v varchar(20), by bytea, d date, ts timestamp,"
        " tz timestamptz, tm time, js json, jb jsonb)",
        # uuid and the rest: COPY (FORMAT csv); `t` first, so that a value opening the
        # read-back's csv starts with a BOM
        "CREATE TABLE x_csv (t text, id uuid PRIMARY KEY, root_id uuid NOT NULL REFERENCES"
        " x_root, r real, n40 numeric(40, 10), n76 numeric(76, 0), nu numeric, iv interval,"
        " tt timetz, ip inet, ci cidr, ia integer[], ta text[], fa float8[], dm posint,"
        " mo mood, tv tsvector, mac macaddr, bits bit varying(20), money_ money)",
    ],
    "mariadb": [
        "CREATE TABLE x_root (id BIGINT UNSIGNED PRIMARY KEY, name TEXT)",
        "CREATE TABLE x_num (id BIGINT UNSIGNED PRIMARY KEY, root_id BIGINT UNSIGNED NOT NULL,"
        " ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT,"
        " mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,"
        " f FLOAT, d DOUBLE, dec65 DECIMAL(65, 30), dec2 DECIMAL(10, 2), bt BIT(10),"
        " b1 BIT(1), b64 BIT(64), bo BOOL, y YEAR,"
        " FOREIGN KEY (root_id) REFERENCES x_root (id))",
        "CREATE TABLE x_txt (id INT PRIMARY KEY, root_id BIGINT UNSIGNED NOT NULL,"
        " c CHAR(10), v VARCHAR(100), t LONGTEXT, bl LONGBLOB, vb VARBINARY(10),"
        " s SET('a', 'b', '😀'), e ENUM('x', '😀', 'y z'), j JSON, g GEOMETRY, p POINT,"
        " dt DATE, ts DATETIME(6), tm TIME(6), tsz TIMESTAMP(6) NULL,"
        " FOREIGN KEY (root_id) REFERENCES x_root (id))",
    ],
    "sqlite": [
        "CREATE TABLE x_root (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE x_any (id INTEGER PRIMARY KEY, root_id INTEGER NOT NULL REFERENCES"
        " x_root (id), u, n NUMERIC, dec DECIMAL(10, 2), bo BOOLEAN, d DATE, ts DATETIME,"
        " j JSON, i INTEGER, bi BIGINT, r REAL, f FLOAT, t TEXT, vc VARCHAR(5), b BLOB)",
    ],
}

TEXTY = "ctl \x01\x02\x1f\x7f tab\t nl\n cr\r q\"'` back\\slash \\N NULL comma, é 中文 😀"

INSERTS = {
    "postgresql": [
        f"INSERT INTO x_root VALUES ('{PG_ROOT}', 'root'), "
        "('ffffffff-0000-4000-8000-000000000002', 'other')",
        "INSERT INTO x_bin VALUES (1, '{r}', -32768, -2147483648, -9223372036854775808, '0.1',"
        " 'NaN', '-99999999999999999999999999999999.999999', true, E'\\ufeffbom'"
        " || {texty}, 'ab  ', 'trail  ', '\\x0001ff80', '0001-01-01', '0001-01-01 00:00:00',"
        " '0001-01-01 00:00:00+00', '00:00:00', '{{\"b\": 1, \"a\": [1.0e0, 10E-1]}}',"
        " '{{\"b\": 1, \"a\": [1.0e0, 10E-1]}}')",
        "INSERT INTO x_bin VALUES (2, '{r}', 32767, 2147483647, 9223372036854775807,"
        " '3.4028235e38', 'Infinity', '99999999999999999999999999999999.999999', false, '', '',"
        " '', '', '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00',"
        " '23:59:59.999999', '[]', 'null')",
        "INSERT INTO x_bin VALUES (3, '{r}', 0, 0, 0, '-Infinity', '-Infinity', '0.000001', NULL,"
        " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO x_bin (id, root_id, r, f, t, by) VALUES (4, '{r}', '1e-45',"
        f" '4.9e-324', repeat('x', {MB}), decode(repeat('00ff', {MB // 2}), 'hex'))",
        "INSERT INTO x_bin (id, root_id, r, f) VALUES (5, '{r}', 'NaN', '0.30000000000000004')",
        "INSERT INTO x_bin (id, root_id, r, f) VALUES (6, '{r}', '1.17549435e-38',"
        " '1.7976931348623157e308')",
        "INSERT INTO x_csv VALUES (E'\\ufeffBOM opens the csv',"
        " '00000000-0000-0000-0000-000000000000', '{r}', '0.1',"
        " '123456789012345678901234567890.0123456789', repeat('9', 76)::numeric,"
        " '3.14159265358979323846264338327950288419716939937510582097494459230781640628',"
        " '1 year 2 mons -3 days 04:05:06.789', '23:59:59.999999+14', '192.168.0.1/24',"
        " '10.0.0.0/8', '{{1,NULL,-2147483648}}', '{{\"a,b\",\"\",NULL,\"\\\"\",\"NULL\"}}',"
        " '{{NaN,Infinity,0.1,5e-324}}', 2147483647, '😀', 'a:1 b:2B fat', '08:00:2b:01:02:03',"
        " B'101', '-92233720368547758.08')",
        "INSERT INTO x_csv (t, id, root_id, r, nu, mo) VALUES (NULL,"
        " 'ffffffff-ffff-ffff-ffff-ffffffffffff', '{r}', 'NaN', 'NaN', 'quo\"te')",
        "INSERT INTO x_csv (t, id, root_id, r, nu, iv, tt) VALUES ({texty},"
        " '7fffffff-0000-4000-8000-000000000000', '{r}', '-Infinity', 'Infinity',"
        " '-178000000 years', '00:00:00-15:59')",
        "INSERT INTO x_csv (t, id, root_id, r, nu) VALUES ('',"
        " 'ab000000-0000-4000-8000-000000000000', '{r}', '-0', '-Infinity')",
        "INSERT INTO x_csv (id, root_id) VALUES ('ac000000-0000-4000-8000-000000000000', '{r}')",
    ],
    "mariadb": [
        f"INSERT INTO x_root VALUES ({MARIA_ROOT}, 'root'), (18446744073709551615, 'other')",
        "INSERT INTO x_num VALUES (18446744073709551615, {r}, -128, 255, -32768, 65535, -8388608,"
        " 16777215, -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,"
        " 221693.46875, 0.30000000000000004, '-99999999999999999999999999999999999.999999999999"
        "999999999999999999', -99999999.99, b'1111111111', b'1', b'1111111111111111111111111111"
        "111111111111111111111111111111111111', 1, 2155)",
        "INSERT INTO x_num VALUES (9223372036854775808, {r}, 127, 0, 32767, 0, 8388607, 0,"
        " 2147483647, 0, 9223372036854775807, 0, 3.4028234663852886e38, 1.7976931348623157e308,"
        " '99999999999999999999999999999999999.999999999999999999999999999999', 99999999.99,"
        " b'0', b'0', b'0', 0, 1901)",
        "INSERT INTO x_num VALUES (1, {r}, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0.1, 4.9e-324,"
        " 0.000000000000000000000000000001, 0.01, b'1000000000', NULL, b'1000000000000000000000"
        "000000000000000000000000000000000000000000', NULL, 0)",
        "INSERT INTO x_num (id, root_id, f, d) VALUES (2, {r}, 1.401298464324817e-45,"
        " 2.2250738585072014e-308)",
        "INSERT INTO x_num (id, root_id) VALUES (3, {r})",
        "INSERT INTO x_txt VALUES (1, {r}, 'ab  ', 'trail  ', {texty}, UNHEX('0001FF80'),"
        " UNHEX('00'), 'a,😀', '😀', '{{\"b\": 1, \"a\": [1.0e0]}}',"
        " ST_GeomFromText('POLYGON((0 0, 1 0, 1 1, 0 0))', 4326), ST_GeomFromText('POINT(1.5 -2)'),"
        " '1000-01-01', '1000-01-01 00:00:00.000000', '-838:59:59.000000',"
        " '1970-01-01 00:00:01.000000')",
        "INSERT INTO x_txt VALUES (2, {r}, '', '', CONCAT('nul>', CHAR(0), '<nul'), '', '', '',"
        " 'y z', '[]', ST_GeomFromText('POINT(0 0)'), ST_GeomFromText('POINT(0 0)', 3857),"
        " '9999-12-31', '9999-12-31 23:59:59.999999', '838:59:59.000000',"
        " '2038-01-19 03:14:07.999999')",
        "INSERT INTO x_txt (id, root_id) VALUES (3, {r})",
        f"INSERT INTO x_txt (id, root_id, t, bl) VALUES (4, {{r}}, REPEAT('x', {MB}),"
        f" UNHEX(REPEAT('00FF', {MB // 2})))",
    ],
    "sqlite": [
        f"INSERT INTO x_root VALUES ({SQLITE_ROOT}, 'root'), (2, 'other')",
        # every storage class in the untyped and NUMERIC-affinity columns
        "INSERT INTO x_any VALUES (1, {r}, 5, 5, 5, 2, '2024-02-29', '2024-02-29 12:34:56.654321',"
        " '{{\"a\": 1}}', -9223372036854775808, 9223372036854775807, 1e308, 5e-324, {texty},"
        " 'abc  ', x'00ff')",
        "INSERT INTO x_any VALUES (2, {r}, '5', '5x', '1.50', 0, 1700000000, 2460000.5, '5',"
        " 9223372036854775807, -1, -1e308, 0.1, '', '', x'')",
        "INSERT INTO x_any VALUES (3, {r}, 5.5, 1.5, 9223372036854775807, 'yes', 2460000.5, x'ab',"
        " 'null', 0, 0, 0.30000000000000004, -0.1, 'nul>' || char(0) || '<nul', 'toolongvalue',"
        " NULL)",
        "INSERT INTO x_any VALUES (4, {r}, x'00ff', x'01', x'', x'00', x'ff', 'x', x'7b7d', NULL,"
        " NULL, NULL, NULL, NULL, NULL, NULL)",
        "INSERT INTO x_any VALUES (5, {r}, 'text', 1e300, 123456789012345678901234567890,"
        " -9223372036854775808, '', '', '', 1, 1, 1.5, 2.5, ' ', ' ', x'00')",
        "INSERT INTO x_any (id, root_id) VALUES (6, {r})",
    ],
}

ROOT = {"postgresql": PG_ROOT, "mariadb": MARIA_ROOT, "sqlite": SQLITE_ROOT}

TABLES = {
    "postgresql": ["x_bin", "x_csv"],
    "mariadb": ["x_num", "x_txt"],
    "sqlite": ["x_any"],
}


def _registry(tables: list[str]) -> str:
    children = "".join(f"      - {{table: {t}, key: root_id}}\n" for t in tables)
    return f"types:\n  extremes:\n    root: {{table: x_root, key: id}}\n    tables:\n{children}"


def _literal(dialect: str, text: str) -> str:
    if dialect == "postgresql":
        return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if dialect == "mariadb":
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + text.replace("'", "''") + "'"


def _root_literal(dialect: str) -> str:
    return str(ROOT[dialect])


def _setup(monkeypatch, db_url, tmp_path, dialect, fast_path, ddl, inserts, tables):
    monkeypatch.setenv("HTD_FAST_PATH", fast_path)  # before the engine: MariaDB's local_infile
    registry = tmp_path / "extremes.yaml"
    registry.write_text(_registry(tables))
    env = make_env(monkeypatch, db_url, tmp_path, str(registry))
    with env.engine.begin() as conn:
        for stmt in ddl:
            conn.exec_driver_sql(stmt.replace("%", "%%") if dialect == "mariadb" else stmt)
        for stmt in inserts:
            sql = stmt.format(r=_root_literal(dialect), texty=_literal(dialect, TEXTY))
            conn.exec_driver_sql(sql.replace("%", "%%") if dialect != "sqlite" else sql)
    return env


def _mariadb_expr(column: str, data_type: str) -> str:
    q = f"`{column}`"
    if data_type == "float":
        return f"CAST({q} AS DOUBLE)"
    if data_type == "bit":
        return f"CAST({q} AS UNSIGNED)"
    if data_type in ("geometry", "point", "polygon", "linestring") or "blob" in data_type:
        return f"HEX({q})"
    return q


def raw_rows(engine: sa.Engine, table: str) -> list:
    """Every row of `table` as the server has it, sorted, without our code or SQLAlchemy's types."""
    name = engine.dialect.name
    with engine.connect() as conn:
        if name == "postgresql":
            rows = conn.exec_driver_sql(f"SELECT CAST({table} AS text) FROM {table}").all()
            return sorted(r[0] for r in rows)
        if name == "mysql":
            cols = conn.exec_driver_sql(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position",
                (table,),
            ).all()
            exprs = ", ".join(_mariadb_expr(c, t) for c, t in cols)
            rows = conn.exec_driver_sql(f"SELECT {exprs} FROM `{table}`").all()
            return sorted((tuple(r) for r in rows), key=repr)
        cols = [r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table})").all()]
        exprs = ", ".join(f"typeof({c}), {c}" for c in cols)
        rows = conn.exec_driver_sql(f"SELECT {exprs} FROM {table}").all()
        return sorted((tuple(r) for r in rows), key=repr)


def _back_up(env, relation_id):
    registry = load_registry(env.relations_file)
    # backup_sessions lives in delete.py since the delete is proven before it commits
    try:
        from htd_pipelines.delete import backup_sessions
    except ImportError:
        backup_sessions = backup_mod.backup_sessions
    return registry, backup_sessions(
        env.engine,
        registry,
        env.store(),
        type_name="extremes",
        relation_ids=[relation_id],
        uid="tester",
        run_id="extremes-backup",
    )


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_extreme_values_of_every_type_round_trip(
    monkeypatch, db_url, tmp_path, dialect, fast_path
) -> None:
    env = _setup(
        monkeypatch,
        db_url,
        tmp_path,
        dialect,
        fast_path,
        DDL[dialect],
        INSERTS[dialect],
        TABLES[dialect],
    )
    tables = ["x_root", *TABLES[dialect]]
    before = {t: raw_rows(env.engine, t) for t in tables}
    registry, [recorded] = _back_up(env, ROOT[dialect])
    for t in TABLES[dialect]:  # the session's rows are gone, the other session's stay
        assert env.count(t) == 0, t
    assert env.count("x_root") == 1
    restored = restore_backup(env.engine, registry, recorded.backup_id, uid="t", run_id="r")
    assert restored.corrected == {}
    for t in tables:
        after = raw_rows(env.engine, t)
        assert len(after) == len(before[t]), t
        for old, new in zip(before[t], after, strict=True):
            assert new == old, f"{t}: {old!r:.300} came back as {new!r:.300}"


# ------------------------------------------------------------------------------------ refusals

BAD_VALUES = {  # dialect -> (column DDL, SQL literal, what the message shows)
    "postgresql": [
        ("v date", "'infinity'", "infinity"),
        ("v date", "'-infinity'", "-infinity"),
        ("v date", "'0044-03-15 BC'", "0044-03-15 BC"),
        ("v date", "'10000-01-01'", "10000-01-01"),
        ("v timestamp", "'infinity'", "infinity"),
        ("v timestamp", "'0001-12-31 23:00:00 BC'", "0001-12-31 23:00:00 BC"),
        ("v timestamptz", "'-infinity'", "-infinity"),
        ("v timestamptz", "'12000-01-01 00:00:00+00'", "12000-01-01 00:00:00+00"),
        ("v time", "'24:00:00'", "24:00:00"),
        ("v numeric(10, 2)", "'NaN'", "NaN"),
    ],
    "mariadb": [
        ("v DATE", "'0000-00-00'", "0000-00-00"),
        ("v DATE", "'2020-00-00'", "2020-00-00"),
        ("v DATETIME", "'0000-00-00 00:00:00'", "0000-00-00 00:00:00"),
        ("v DATETIME(6)", "'2020-02-00 10:00:00'", "2020-02-00 10:00:00"),
    ],
    "sqlite": [
        ("v INTEGER", "'abc'", "abc"),
        ("v INTEGER", "1.5", "1.5"),
        ("v REAL", "'x'", "x"),
        ("v TEXT", "x'00ff'", "\\x00\\xff"),
        ("v BLOB", "'text'", "text"),
    ],
}


def _bad_cases() -> list:
    return [
        pytest.param(d, col, lit, shown, fp, id=f"{d}-{col}-{lit}-fast{fp}")
        for d, cases in BAD_VALUES.items()
        for col, lit, shown in cases
        for fp in ("1", "0")
    ]


@pytest.mark.parametrize(
    ("dialect", "column", "literal", "shown", "fast_path"), _bad_cases(), indirect=["dialect"]
)
def test_a_value_that_cannot_be_carried_is_refused_at_extract_naming_it(
    monkeypatch, db_url, tmp_path, dialect, column, literal, shown, fast_path
) -> None:
    key = {"postgresql": "integer", "mariadb": "INT", "sqlite": "INTEGER"}[dialect]
    ddl = [
        f"CREATE TABLE x_root (id {key} PRIMARY KEY)",
        f"CREATE TABLE x_bad (id {key} PRIMARY KEY, root_id {key} NOT NULL, {column})",
    ]
    inserts = ["INSERT INTO x_root VALUES (7)", f"INSERT INTO x_bad VALUES (41, 7, {literal})"]
    env = _setup(monkeypatch, db_url, tmp_path, dialect, fast_path, ddl, inserts, ["x_bad"])
    with pytest.raises(ValueRefused) as refused:
        _back_up(env, 7)
    message = str(refused.value)
    assert "table x_bad" in message and "column v" in message, message
    assert "'id': 41" in message, message
    assert shown in message, message
    assert env.count("x_bad") == 1 and env.count("x_root") == 1  # nothing deleted
    with env.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM back_up")).scalar_one() == 0


@pytest.mark.parametrize("dialect", ["mariadb"], indirect=True)
def test_a_type_that_cannot_be_carried_is_refused_when_resolved(
    monkeypatch, db_url, tmp_path, dialect
) -> None:
    """MariaDB types SQLAlchemy does not know (INET6 here) are refused up front, naming the
    table, the column and the type: nothing is read, written or deleted."""
    ddl = [
        "CREATE TABLE x_root (id INT PRIMARY KEY)",
        "CREATE TABLE x_odd (id INT PRIMARY KEY, root_id INT NOT NULL, addr INET6)",
    ]
    inserts = ["INSERT INTO x_root VALUES (7)", "INSERT INTO x_odd VALUES (1, 7, '::1')"]
    env = _setup(monkeypatch, db_url, tmp_path, dialect, "1", ddl, inserts, ["x_odd"])
    with pytest.raises(RegistryError) as refused:
        _back_up(env, 7)
    message = str(refused.value)
    assert "x_odd" in message and "column addr" in message and "type" in message, message
    assert env.count("x_odd") == 1
    assert not list(env.snapshot_dir.rglob("*.parquet"))
