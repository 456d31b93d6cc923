"""The product's one promise, as a property: a backup with delete either is refused before anything
was deleted, or deletes the session and its restore gives back exactly every column of every row.

Each example (strategies in ``schemas.py``) is a fresh database with a random root table, 0-2
children and 0-2 grandchildren (random key types, 0-5 columns of random SQL types, extreme
values), two sessions and an unrelated table. The session tagged 0 is backed up with
``keep_source=False`` (``backup_sessions``) and restored (``restore_backup``); every application
table is read before and after with plain SELECTs on a connection of the test's own (not through
the product's code) and compared value for value:

- backup refused: the database is unchanged and no catalog row says ``source_deleted = 1``;
- backup done: exactly the session's rows are gone (the other session and the unrelated table
  unchanged), and after the restore every table equals what it was before the backup.

Run on sqlite, postgresql and mariadb, fast path and portable path (``HTD_FAST_PATH=0``). Profiles
in ``conftest.py``. With ``HTD_PROPERTY_COLLECT=<file>`` every failure (and every refusal) is
appended to that file as one JSON line and the run goes on (to survey the failure classes).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path

import psycopg
import pymysql
import pytest
from hypothesis import event as hypothesis_event
from hypothesis import given, reject
from hypothesis.control import currently_in_test_context
from sqlalchemy.engine import make_url

from htd_pipelines.delete import backup_sessions
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.restore import restore_backup
from htd_pipelines.store.catalog import CATALOG_TABLES
from htd_pipelines.store.snapshots import SnapshotStore
from tests.properties.schemas import Case, Table, cases
from tests.support.dbs import DIALECTS, dialect_of, drop_database, new_database, require_server
from tests.support.env import make_env

TYPE_NAME = "prop"

# ------------------------------------------------------------------------------ raw connections


def connect(url: str):
    """A plain DB-API connection in autocommit mode (MariaDB: strict, UTC)."""
    u = make_url(url)
    dialect = dialect_of(u)
    if dialect == "sqlite":
        conn = sqlite3.connect(u.database, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn
    if dialect == "postgresql":
        return psycopg.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
            autocommit=True, options="-c timezone=UTC",
        )  # fmt: skip
    conn = pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, password=u.password or "",
        database=u.database, charset="utf8mb4", autocommit=True,
    )  # fmt: skip
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
        cur.execute("SET SESSION time_zone = '+00:00'")
    return conn


def event(message: str) -> None:
    if currently_in_test_context():  # not in the regression tests' explicit cases
        hypothesis_event(message)


def execute(conn, sql: str, params: tuple | list = ()) -> list:
    if isinstance(conn, sqlite3.Connection):
        cur = conn.execute(sql.replace("%s", "?"), params)
        return cur.fetchall() if cur.description else []
    with conn.cursor() as cur:
        cur.execute(sql, params or None)
        return list(cur.fetchall()) if cur.description else []


# ------------------------------------------------------------------------------ schema and rows


def trigger_columns(dialect: str) -> list[str]:
    if dialect == "mariadb":
        return [
            "stamp DATETIME(6) NULL",
            "upd TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)",
        ]
    return ["stamp timestamptz"]


def create_table(conn, dialect: str, t: Table, parents: dict[str, Table]) -> None:
    cols = [f"{c} {d} NOT NULL" for c, d in t.key]
    if t.ref:
        cols.append(f"{t.ref[0]} {t.ref[1]} NOT NULL")
    cols.append("tag SMALLINT NOT NULL")
    cols += [f"{c} {ct.ddl}" for c, ct in t.extras]
    if t.trigger:
        cols += trigger_columns(dialect)
    cols.append(f"PRIMARY KEY ({', '.join(t.pk)})")
    if t.ref:
        cols.append(f"FOREIGN KEY ({t.ref[0]}) REFERENCES {t.parent} ({parents[t.parent].pk[0]})")
    execute(conn, f"CREATE TABLE {t.name} ({', '.join(cols)})")
    if t.trigger and dialect == "mariadb":
        execute(
            conn,
            f"CREATE TRIGGER {t.name}_stamp BEFORE INSERT ON {t.name} FOR EACH ROW"
            " SET NEW.stamp = NOW(6)",
        )
    elif t.trigger:
        execute(
            conn,
            "CREATE OR REPLACE FUNCTION p_stamp() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN NEW.stamp := clock_timestamp(); RETURN NEW; END$$",
        )
        execute(
            conn,
            f"CREATE TRIGGER {t.name}_stamp BEFORE UPDATE ON {t.name} FOR EACH ROW"
            " EXECUTE FUNCTION p_stamp()",
        )


def insert_rows(conn, t: Table) -> None:
    """Insert every row; a value the server (or driver) rejects is replaced by NULL (extras are
    nulled one by one until the row goes in); a row whose keys are rejected rejects the example."""
    for row in t.rows:
        for attempt in range(len(t.extras) + 1):
            cols = list(row)
            marks = ", ".join(["%s"] * len(cols))
            sql = f"INSERT INTO {t.name} ({', '.join(cols)}) VALUES ({marks})"
            try:
                execute(conn, sql, [row[c] for c in cols])
                break
            except Exception:  # noqa: BLE001 - any refusal of a value: filter it out
                if not currently_in_test_context():
                    raise  # an explicit case: its values must go in as they are
                if attempt == len(t.extras):
                    reject()
                col, ctype = t.extras[attempt]
                if row[col] is not None:
                    event(f"value rejected at INSERT: {ctype.ddl}")
                row[col] = None


def build(url: str, case: Case) -> None:
    conn = connect(url)
    try:
        tables = {t.name: t for t in case.tables}
        for t in [*case.tables, case.unrelated]:
            create_table(conn, case.dialect, t, tables)
        for t in [*case.tables, case.unrelated]:
            insert_rows(conn, t)
    finally:
        conn.close()


def registry_yaml(case: Case) -> str:
    root, *rest = case.tables
    lines = ["types:", f"  {TYPE_NAME}:", f"    root: {{table: {root.name}, key: id}}"]
    lines.append("    tables:")
    for t in rest:
        parent = f", parent: {t.parent}" if t.parent != root.name else ""
        lines.append(f"      - {{table: {t.name}, key: {t.ref[0]}{parent}}}")
    if not rest:
        lines[-1] = "    tables: []"
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ raw snapshots


def _tables(conn, dialect: str) -> list[str]:
    if dialect == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    elif dialect == "postgresql":
        sql = (
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
    else:
        sql = (
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
        )
    return sorted(r[0] for r in execute(conn, sql) if r[0] not in CATALOG_TABLES)


def _columns(conn, dialect: str, table: str) -> list[str]:
    if dialect == "sqlite":
        return [r[1] for r in execute(conn, f"PRAGMA table_info({table})")]
    schema = "'public'" if dialect == "postgresql" else "DATABASE()"
    return [
        r[0]
        for r in execute(
            conn,
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            f"{schema} AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
    ]


def _norm(value: object) -> object:
    """A driver value as compared: its Python type and exact repr (NaN equals NaN, -0.0 is not
    0.0, Decimal('1.0') is not Decimal('1.00'), int 1 is not float 1.0)."""
    if value is None:
        return None
    return (type(value).__name__, repr(value))


Snapshot = dict[str, tuple[list[str], list[tuple]]]


def snapshot(url: str, case: Case) -> Snapshot:
    """Every application table (catalog tables aside): (columns, rows ordered by primary key),
    read with plain SELECTs. PostgreSQL values as their text form (exact for every type)."""
    dialect = case.dialect
    keys = {t.name: t.pk for t in [*case.tables, case.unrelated]}
    conn = connect(url)
    try:
        out: Snapshot = {}
        for table in _tables(conn, dialect):
            cols = _columns(conn, dialect, table)
            order = ", ".join(keys.get(table, cols))
            if dialect == "postgresql":
                select = ", ".join(f"{c}::text" for c in cols)
                sql = f"SELECT {select} FROM {table} ORDER BY {order}"
                rows = [tuple(r) for r in execute(conn, sql)]
            else:
                sql = f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}"
                rows = [tuple(_norm(v) for v in r) for r in execute(conn, sql)]
            out[table] = (cols, rows)
        return out
    finally:
        conn.close()


def source_deleted_rows(url: str) -> int:
    conn = connect(url)
    try:
        return execute(conn, "SELECT COUNT(*) FROM back_up WHERE source_deleted = 1")[0][0]
    except Exception:  # noqa: BLE001 - no catalog table: no such row
        return 0
    finally:
        conn.close()


def _is_session(value: object) -> bool:
    return value in ("0", ("int", "0"))


def without_session(snap: Snapshot, case: Case) -> Snapshot:
    out: Snapshot = {}
    for table, (cols, rows) in snap.items():
        if table in {t.name for t in case.tables}:
            i = cols.index("tag")
            rows = [r for r in rows if not _is_session(r[i])]
        out[table] = (cols, rows)
    return out


def _short(v: object) -> str:
    s = repr(v)
    return s if len(s) <= 160 else s[:150] + f"...({len(s)} chars)"


def column_types(case: Case) -> dict[tuple[str, str], str]:
    out = {}
    for t in [*case.tables, case.unrelated]:
        for c, d in t.key:
            out[(t.name, c)] = d
        if t.ref:
            out[(t.name, t.ref[0])] = t.ref[1]
        for c, ct in t.extras:
            out[(t.name, c)] = ct.ddl
        if t.trigger:
            out[(t.name, "stamp")] = "trigger-stamped"
            out[(t.name, "upd")] = "TIMESTAMP ON UPDATE"
    return out


def differences(expected: Snapshot, actual: Snapshot, case: Case) -> list[dict]:
    """Lost rows, extra rows and changed cells, keyed by primary key."""
    types = column_types(case)
    keys = {t.name: t.pk for t in [*case.tables, case.unrelated]}
    diffs: list[dict] = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual or table not in expected:
            kind = "table missing" if table in expected else "table added"
            diffs.append({"kind": kind, "table": table})
            continue
        (cols, e_rows), (a_cols, a_rows) = expected[table], actual[table]
        if cols != a_cols:
            change = {"before": cols, "after": a_cols}
            diffs.append({"kind": "columns changed", "table": table, **change})
            continue
        pk = [cols.index(c) for c in keys.get(table, cols)]
        e_by = {tuple(r[i] for i in pk): r for r in e_rows}
        a_by = {tuple(r[i] for i in pk): r for r in a_rows}
        for k in e_by.keys() - a_by.keys():
            diffs.append({"kind": "lost row", "table": table, "key": _short(k)})
        for k in a_by.keys() - e_by.keys():
            diffs.append({"kind": "extra row", "table": table, "key": _short(k)})
        for k in e_by.keys() & a_by.keys():
            for c, b, a in zip(cols, e_by[k], a_by[k], strict=True):
                if b != a:
                    diffs.append(
                        {
                            "kind": "changed value",
                            "table": table,
                            "column": c,
                            "type": types.get((table, c), "?"),
                            "key": _short(k),
                            "before": _short(b),
                            "after": _short(a),
                        }
                    )
    return diffs


# ------------------------------------------------------------------------------ the property


class PromiseBroken(AssertionError):
    pass


def _collect(record: dict) -> bool:
    """Append a record to HTD_PROPERTY_COLLECT (True) or do nothing (False: raise instead)."""
    path = os.environ.get("HTD_PROPERTY_COLLECT")
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
    return True


def _broken(case: Case, fast_path: str, outcome: str, detail: object) -> None:
    record = {
        "dialect": case.dialect,
        "path": "fast" if fast_path == "1" else "portable",
        "outcome": outcome,
        "detail": detail,
        "case": repr(case),
    }
    event(f"broken: {outcome}")
    if not _collect(record):
        raise PromiseBroken(f"{outcome}: {json.dumps(detail, default=str, indent=1)[:6000]}")


def check_case(case: Case, fast_path: str, *, must_succeed: bool = False) -> None:
    """Build the case in a fresh database, back its session up with delete, restore it, and
    check the promise (``must_succeed``: a clean refusal fails too: the regression tests of
    sessions that can be backed up)."""
    tmp = Path(tempfile.mkdtemp(prefix="htd_prop_"))
    url = new_database(case.dialect, tmp)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HTD_FAST_PATH", fast_path)
            registry_file = tmp / "registry.yaml"
            registry_file.write_text(registry_yaml(case))
            env = make_env(mp, url, tmp, str(registry_file))
            build(url, case)
            before = snapshot(url, case)
            registry = load_registry(str(registry_file))
            store = SnapshotStore(str(env.snapshot_dir))
            run = uuid.uuid4().hex
            try:
                recorded = backup_sessions(
                    env.engine, registry, store, type_name=TYPE_NAME,
                    relation_ids=[case.session], uid="prop", run_id=run, keep_source=False,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - a refusal is allowed, if it is clean
                message = f"{type(exc).__name__}: {' '.join(str(exc).split())[:1500]}"
                diffs = differences(before, snapshot(url, case), case)
                deleted = source_deleted_rows(url)
                if diffs or deleted:
                    detail = {"error": message, "diffs": diffs[:20], "source_deleted": deleted}
                    _broken(case, fast_path, "backup refused after changing the database", detail)
                    return
                if must_succeed:
                    raise PromiseBroken(f"backup refused (cleanly): {message}") from exc
                event("outcome: backup refused cleanly")
                path = "fast" if fast_path == "1" else "portable"
                _collect(
                    {
                        "dialect": case.dialect,
                        "path": path,
                        "outcome": "refused cleanly",
                        "detail": {"error": message},
                        "case": repr(case),
                    }
                )
                return
            after_backup = snapshot(url, case)
            diffs = differences(without_session(before, case), after_backup, case)
            if diffs:
                _broken(case, fast_path, "backup deleted the wrong rows", {"diffs": diffs[:20]})
                return
            try:
                restore_backup(
                    env.engine, registry, recorded[0].backup_id, uid="prop", run_id=run + "r"
                )
            except Exception as exc:  # noqa: BLE001 - the session is gone: the promise is broken
                message = f"{type(exc).__name__}: {' '.join(str(exc).split())[:1500]}"
                lost = differences(before, snapshot(url, case), case)[:20]
                detail = {"error": message, "diffs": lost}
                _broken(case, fast_path, "restore refused after delete (session lost)", detail)
                return
            diffs = differences(before, snapshot(url, case), case)
            if diffs:
                _broken(case, fast_path, "restore gave back different rows", {"diffs": diffs[:20]})
                return
            event("outcome: round trip exact")
            _collect({"dialect": case.dialect, "path": fast_path, "outcome": "exact"})
    finally:
        drop_database(url)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("fast_path", ["1", "0"], ids=["fast", "portable"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_backup_with_delete_is_refused_cleanly_or_restores_exactly(dialect, fast_path) -> None:
    require_server(dialect)

    @given(case=cases(dialect))
    def promise(case: Case) -> None:
        check_case(case, fast_path)

    promise()
