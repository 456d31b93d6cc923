"""The backup's delete is proven before it commits (htd_pipelines/delete.py).

- Triggers and ON UPDATE columns: a restore gives back exactly the backed-up rows on tables
  whose BEFORE INSERT trigger overwrites a column, with an ON UPDATE CURRENT_TIMESTAMP column
  (MariaDB) or a BEFORE UPDATE trigger stamping a column (PostgreSQL).
- A trigger whose effect the restore cannot undo is found by the rehearsal, before the
  delete: nothing is deleted, the backup is discarded, the error names table and column.
- A row changed after the extract and before the delete aborts the delete, naming the key
  and both values.
- `restore --dry-run` runs the same rehearsal: it predicts a failure the real restore has.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from htd_pipelines import backup, delete, restore
from htd_pipelines.api import list_backups
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import CATALOG_TABLES
from tests.support.chinook import snapshot_database
from tests.support.env import make_env

REGISTRY = """\
types:
  doc:
    root: {table: p_doc, key: id}
    tables:
      - {table: p_line, key: doc_id}
"""

DDL = {
    "postgresql": [
        "CREATE TABLE p_doc (id integer PRIMARY KEY, title text NOT NULL,"
        " create_date timestamp NOT NULL, last_update timestamp NOT NULL)",
        "CREATE TABLE p_line (id integer PRIMARY KEY, doc_id integer NOT NULL"
        " REFERENCES p_doc (id), body text)",
        "CREATE FUNCTION p_stamp_insert() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN NEW.create_date := now(); NEW.last_update := now(); RETURN NEW; END $$",
        "CREATE FUNCTION p_stamp_update() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN NEW.last_update := clock_timestamp(); RETURN NEW; END $$",
        "CREATE TRIGGER p_doc_ins BEFORE INSERT ON p_doc FOR EACH ROW"
        " EXECUTE FUNCTION p_stamp_insert()",
        "CREATE TRIGGER p_doc_upd BEFORE UPDATE ON p_doc FOR EACH ROW"
        " EXECUTE FUNCTION p_stamp_update()",
    ],
    "mysql": [
        "CREATE TABLE p_doc (id INT PRIMARY KEY, title TEXT NOT NULL,"
        " create_date DATETIME(6) NOT NULL,"
        " last_update TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
        " ON UPDATE CURRENT_TIMESTAMP(6))",
        "CREATE TABLE p_line (id INT PRIMARY KEY, doc_id INT NOT NULL, body TEXT,"
        " FOREIGN KEY (doc_id) REFERENCES p_doc (id))",
        "CREATE TRIGGER p_doc_ins BEFORE INSERT ON p_doc FOR EACH ROW SET NEW.create_date = NOW(6)",
    ],
    "sqlite": [
        "CREATE TABLE p_doc (id INTEGER PRIMARY KEY, title TEXT NOT NULL,"
        " create_date TEXT NOT NULL, last_update TEXT NOT NULL)",
        "CREATE TABLE p_line (id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL"
        " REFERENCES p_doc (id), body TEXT)",
    ],
}

# A trigger no restore can undo: it rewrites the row after every insert and every update
# (created after the rows were written).
UNDOABLE = {
    "postgresql": [  # an AFTER trigger rewrites the row again after the correction too
        "CREATE FUNCTION p_line_mark() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN IF pg_trigger_depth() < 2 THEN"
        " UPDATE p_line SET body = coalesce(body, '') || '!' WHERE id = NEW.id; END IF;"
        " RETURN NULL; END $$",
        "CREATE TRIGGER p_line_mark AFTER INSERT OR UPDATE ON p_line FOR EACH ROW"
        " EXECUTE FUNCTION p_line_mark()",
    ],
    "mysql": [
        "CREATE TRIGGER p_line_ins BEFORE INSERT ON p_line FOR EACH ROW"
        " SET NEW.body = CONCAT(COALESCE(NEW.body, ''), '!')",
        "CREATE TRIGGER p_line_upd BEFORE UPDATE ON p_line FOR EACH ROW"
        " SET NEW.body = CONCAT(COALESCE(NEW.body, ''), '!')",
    ],
    "sqlite": [
        "CREATE TRIGGER p_line_ins AFTER INSERT ON p_line FOR EACH ROW"
        " BEGIN UPDATE p_line SET body = coalesce(body, '') || '!' WHERE id = NEW.id; END",
        "CREATE TRIGGER p_line_upd AFTER UPDATE ON p_line FOR EACH ROW"
        " BEGIN UPDATE p_line SET body = coalesce(body, '') || '!' WHERE id = NEW.id; END",
    ],
}

DOCS = [(1, "first", "2020-01-02 03:04:05.123456", "2021-06-07 08:09:10.654321"),
        (2, "second", "2019-12-31 23:59:59", "2020-01-01 00:00:00")]  # fmt: skip
LINES = [(10, 1, "a"), (11, 1, None), (12, 1, "c"), (20, 2, "other session")]


def _insert_rows(conn, dialect: str) -> None:
    if dialect == "postgresql":  # the demo rows carry their own stamps
        conn.exec_driver_sql("ALTER TABLE p_doc DISABLE TRIGGER USER")
    elif dialect == "mysql":
        conn.exec_driver_sql("DROP TRIGGER p_doc_ins")
    for row in DOCS:
        conn.execute(
            sa.text("INSERT INTO p_doc VALUES (:i, :t, :c, :u)"),
            dict(zip("itcu", row, strict=True)),
        )
    for row in LINES:
        conn.execute(
            sa.text("INSERT INTO p_line VALUES (:i, :d, :b)"), dict(zip("idb", row, strict=True))
        )
    if dialect == "postgresql":
        conn.exec_driver_sql("ALTER TABLE p_doc ENABLE TRIGGER USER")
    elif dialect == "mysql":
        conn.exec_driver_sql(DDL["mysql"][-1])


@pytest.fixture
def proof_env(monkeypatch, db_url, tmp_path):
    registry = tmp_path / "doc.yaml"
    registry.write_text(REGISTRY)
    env = make_env(monkeypatch, db_url, tmp_path, str(registry))
    name = env.engine.dialect.name
    with env.engine.begin() as conn:
        for stmt in DDL[name]:
            conn.exec_driver_sql(stmt)
        _insert_rows(conn, name)
    return env


def _registry(env):
    return load_registry(env.relations_file)


def _table(env, name: str) -> list[tuple]:
    with env.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY id"))]


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_triggers_and_on_update_columns_do_not_change_a_restore(
    proof_env, monkeypatch, fast_path
) -> None:
    monkeypatch.setenv("HTD_FAST_PATH", fast_path)
    env = proof_env
    before = snapshot_database(env.url, exclude=CATALOG_TABLES)
    recorded = delete.backup_sessions(
        env.engine, _registry(env), env.store(), type_name="doc", relation_ids=[1],
        uid="t", run_id="proof-1",
    )  # fmt: skip
    assert env.count("p_line", "WHERE doc_id = 1") == 0
    result = restore.restore_backup(
        env.engine, _registry(env), recorded[0].backup_id, uid="t", run_id="r"
    )
    assert snapshot_database(env.url, exclude=CATALOG_TABLES) == before
    if env.engine.dialect.name != "sqlite":  # the trigger did fire; the restore undid it
        assert result.corrected.get("p_doc", 0) >= 1


def _undoable(env) -> None:
    with env.engine.begin() as conn:
        for stmt in UNDOABLE[env.engine.dialect.name]:
            conn.exec_driver_sql(stmt)


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_a_backup_that_would_not_restore_deletes_nothing(proof_env, monkeypatch, fast_path) -> None:
    monkeypatch.setenv("HTD_FAST_PATH", fast_path)
    env = proof_env
    _undoable(env)
    before = snapshot_database(env.url, exclude=CATALOG_TABLES)
    with pytest.raises(delete.NotRestorable) as refused:
        delete.backup_sessions(
            env.engine, _registry(env), env.store(), type_name="doc", relation_ids=[1],
            uid="t", run_id="proof-2",
        )  # fmt: skip
    message = str(refused.value)
    assert "p_line" in message and "body" in message and "nothing was deleted" in message
    assert snapshot_database(env.url, exclude=CATALOG_TABLES) == before
    assert list_backups("doc", 1) == []  # discarded: no backup that would not restore
    assert not any((env.snapshot_dir / "doc" / "1").glob("v*/manifest.json"))
    with env.engine.connect() as conn:
        actions = conn.execute(
            sa.select(catalog.operation_log.c.action, catalog.operation_log.c.status)
        ).all()
    assert ("delete", "failed") in [tuple(a) for a in actions]


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_a_row_changed_after_the_extract_aborts_the_delete(
    proof_env, monkeypatch, fast_path
) -> None:
    monkeypatch.setenv("HTD_FAST_PATH", fast_path)
    env = proof_env
    registry, store = _registry(env), env.store()
    plan = backup.plan_backup(
        env.engine, registry, store, type_name="doc", relation_ids=[1], uid="t",
        keep_source=False, run_id="proof-3",
    )  # fmt: skip
    extracts = [
        backup.extract_table(env.engine, registry, store, plan, t) for t in ("p_doc", "p_line")
    ]
    recorded = backup.record_backup(env.engine, registry, store, plan, extracts)
    with env.engine.begin() as conn:  # the application writes after the extract
        conn.execute(sa.text("UPDATE p_line SET body = 'edited' WHERE id = 12"))
    before = snapshot_database(env.url, exclude=CATALOG_TABLES)
    with pytest.raises(backup.BackupError) as refused:
        delete.delete_source(env.engine, registry, store, plan, recorded)
    message = str(refused.value)
    assert "p_line" in message and "'c'" in message and "'edited'" in message
    assert "nothing was deleted" in message
    assert snapshot_database(env.url, exclude=CATALOG_TABLES) == before


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_the_dry_run_predicts_what_the_restore_does(proof_env, monkeypatch, fast_path) -> None:
    """After the backup, the table gains a CHECK the backed-up row breaks: no key conflict,
    no missing parent, yet the restore fails. The dry run says so, and writes nothing."""
    monkeypatch.setenv("HTD_FAST_PATH", fast_path)
    env = proof_env
    [rec] = delete.backup_sessions(
        env.engine, _registry(env), env.store(), type_name="doc", relation_ids=[1],
        uid="t", run_id="proof-4",
    )  # fmt: skip
    with env.engine.begin() as conn:
        if env.engine.dialect.name == "sqlite":  # no ALTER TABLE ... ADD CHECK
            conn.exec_driver_sql(
                "CREATE TRIGGER p_no_c BEFORE INSERT ON p_line WHEN NEW.body = 'c'"
                " BEGIN SELECT RAISE(ABORT, 'body c is not allowed'); END"
            )
        else:
            conn.exec_driver_sql(
                "ALTER TABLE p_line ADD CONSTRAINT p_no_c CHECK (body IS NULL OR body <> 'c')"
            )
    before = snapshot_database(env.url)
    preview = restore.preview_restore(env.engine, env.engine, _registry(env), rec.backup_id)
    assert not preview.ok
    assert any("p_line" in p for p in preview.problems), preview.problems
    assert snapshot_database(env.url) == before
    with pytest.raises(restore.RestoreRefused, match="p_line"):
        restore.restore_backup(env.engine, _registry(env), rec.backup_id, uid="t", run_id="r")
    with env.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER p_no_c"
            if env.engine.dialect.name == "sqlite"
            else "ALTER TABLE p_line DROP CONSTRAINT p_no_c"
            if env.engine.dialect.name == "postgresql"
            else "ALTER TABLE p_line DROP CONSTRAINT p_no_c"
        )
    preview = restore.preview_restore(env.engine, env.engine, _registry(env), rec.backup_id)
    assert preview.ok, preview.problems


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_a_role_that_may_not_switch_triggers_off_deletes_nothing(
    proof_env, monkeypatch, tmp_path
) -> None:
    """The application's role does not own p_doc, so the correction cannot switch the BEFORE
    UPDATE trigger off: the rehearsal finds the stamped column, nothing is deleted, and the
    error names the table and column."""
    import secrets

    from sqlalchemy.engine import make_url

    from htd_pipelines.dialects.engine import dispose_engines

    env = proof_env
    role = "htd_app_" + secrets.token_hex(4)
    with env.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT ALL ON SCHEMA public TO {role}")
        conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
    url = make_url(env.url).set(username=role).render_as_string(hide_password=False)
    try:
        app = make_env(monkeypatch, url, tmp_path / "app", env.relations_file)
        before = snapshot_database(env.url, exclude=CATALOG_TABLES)
        with pytest.raises(delete.NotRestorable) as refused:
            delete.backup_sessions(
                app.engine, _registry(app), app.store(), type_name="doc", relation_ids=[1],
                uid="t", run_id="proof-role",
            )  # fmt: skip
        message = str(refused.value)
        assert "p_doc" in message and "last_update" in message
        assert snapshot_database(env.url, exclude=CATALOG_TABLES) == before
    finally:
        dispose_engines()
        with env.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


NO_FK = """\
types:
  loose:
    root: {table: o_doc, key: id}
    tables:
      - {table: o_line, key: doc_id}
"""


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"], indirect=True)
def test_a_row_added_while_the_delete_is_open_is_no_orphan(
    monkeypatch, db_url, tmp_path, dialect
) -> None:
    """No foreign keys (a legacy schema): another connection adds a row to the session while
    the delete's transaction is open. PostgreSQL lets it commit: the recheck before the commit
    finds it and nothing is deleted. MariaDB's delete holds the session's index range: the
    insert waits until the delete has committed (it times out here first)."""
    import threading

    from htd_pipelines.dialects.engine import create_engine

    registry_file = tmp_path / "loose.yaml"
    registry_file.write_text(NO_FK)
    env = make_env(monkeypatch, db_url, tmp_path, str(registry_file))
    with env.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE o_doc (id INTEGER PRIMARY KEY, title VARCHAR(20))")
        conn.exec_driver_sql(
            "CREATE TABLE o_line (id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL,"
            " body VARCHAR(20))"
        )
        conn.exec_driver_sql("CREATE INDEX o_line_doc ON o_line (doc_id)")
        conn.exec_driver_sql("INSERT INTO o_doc VALUES (1, 'one'), (2, 'two')")
        conn.exec_driver_sql("INSERT INTO o_line VALUES (10, 1, 'a'), (11, 1, 'b'), (20, 2, 'c')")
    other = create_engine(env.url)
    outcome: list[str] = []

    def add_a_line() -> None:
        try:
            with other.begin() as conn:
                if dialect == "mariadb":
                    conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 2")
                conn.exec_driver_sql("INSERT INTO o_line VALUES (12, 1, 'late')")
            outcome.append("committed")
        except sa.exc.DBAPIError as exc:
            outcome.append(f"refused: {exc.orig}")

    real = delete._prove_restorable

    def prove_then_add(conn, ctx) -> None:
        real(conn, ctx)
        adder = threading.Thread(target=add_a_line)
        adder.start()
        adder.join(timeout=30)

    monkeypatch.setattr(delete, "_prove_restorable", prove_then_add)
    registry = load_registry(env.relations_file)
    try:
        if dialect == "postgresql":
            with pytest.raises(backup.BackupError, match="o_line: 1 row.*added while"):
                delete.backup_sessions(
                    env.engine, registry, env.store(), type_name="loose", relation_ids=[1],
                    uid="t", run_id="orphan",
                )  # fmt: skip
            assert outcome == ["committed"]
            assert _table(env, "o_line") == [(10, 1, "a"), (11, 1, "b"), (12, 1, "late"),
                                             (20, 2, "c")]  # fmt: skip
            assert _table(env, "o_doc") == [(1, "one"), (2, "two")]
        else:
            delete.backup_sessions(
                env.engine, registry, env.store(), type_name="loose", relation_ids=[1],
                uid="t", run_id="orphan",
            )  # fmt: skip
            assert len(outcome) == 1 and outcome[0].startswith("refused")
            assert "Lock wait timeout" in outcome[0]
            assert _table(env, "o_line") == [(20, 2, "c")]
    finally:
        other.dispose()
