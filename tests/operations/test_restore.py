"""restore_job on SQLite, PostgreSQL and MariaDB: exact, all-or-nothing, at most once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from htd_pipelines import restore
from htd_pipelines.api import list_backups
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.jobs.run_config import restore_run_config
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import CATALOG_TABLES
from tests.support.chinook import chinook_relations_yaml, snapshot_database
from tests.support.daemon import REPO_ROOT
from tests.support.dbs import drop_database, new_database
from tests.support.env import make_env


@pytest.fixture
def env(seeded_env, monkeypatch, tmp_path):
    env = seeded_env(5, seed=11, test_fraction=0)
    return env


def state(env) -> dict:
    return snapshot_database(env.url, exclude=CATALOG_TABLES)


def backed_up(env, sess_id) -> int:
    result = env.run_backup([sess_id])
    assert result.success, failure_message(result)
    return list_backups("inst", sess_id)[0].id


def run_restore(env, backup_id: int, *, uid: str = "restorer", dry_run: bool = False, **kw):
    job = env.defs().resolve_job_def("restore_job")
    config = restore_run_config(backup_id, uid, dry_run, kw.pop("target_env", None))
    return job.execute_in_process(
        run_config=config,
        instance=kw.pop("instance", None) or DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def record(env, backup_id: int):
    with env.engine.connect() as conn:
        return catalog.get_backup(conn, backup_id)


def test_round_trip_gives_back_every_value(env) -> None:
    before = state(env)
    backup_id = backed_up(env, env.ids[2])
    assert state(env) != before
    instance = DagsterInstance.ephemeral()
    result = run_restore(env, backup_id, instance=instance)
    assert result.success, failure_message(result)
    assert state(env) == before  # every column of every row, as the driver returns it
    rec = record(env, backup_id)
    assert (rec.is_reback, rec.restored_by) == (1, "restorer") and rec.restored_at
    mats = instance.fetch_materializations(AssetKey("backup_catalog"), limit=5).records
    assert mats[0].asset_materialization.metadata["is_reback"].value == 1
    with env.engine.connect() as conn:
        actions = conn.execute(
            sa.select(catalog.operation_log.c.action, catalog.operation_log.c.status)
        ).all()
    assert ("restore", "ok") in [tuple(a) for a in actions]
    # auto-increment keys came back as they were, and new rows do not collide with them
    with env.engine.begin() as conn:
        new_id = conn.execute(
            sa.text(
                "INSERT INTO process_session (name, is_test, created_at, updated_at) "
                "VALUES ('after', :f, :t, :t) RETURNING id"
            ),
            {"f": False, "t": "2030-01-01 00:00:00"},
        ).scalar_one()
    assert new_id > max(env.ids)


def test_second_restore_is_refused_and_changes_nothing(env) -> None:
    backup_id = backed_up(env, env.ids[0])
    assert run_restore(env, backup_id).success
    after_first = state(env)
    again = run_restore(env, backup_id, uid="someone-else")
    assert not again.success
    assert f"backup {backup_id}" in failure_message(again)
    assert "already restored" in failure_message(again)
    assert state(env) == after_first
    assert record(env, backup_id).restored_by == "restorer"


def test_existing_keys_refuse_the_restore_and_are_listed(env) -> None:
    sess = env.ids[1]
    backup_id = backed_up(env, sess)
    with env.engine.begin() as conn:  # the session is re-created meanwhile, same key
        conn.execute(
            sa.text(
                "INSERT INTO process_session (id, name, is_test, created_at, updated_at) "
                "VALUES (:i, 'recreated', :f, :t, :t)"
            ),
            {"i": sess, "f": False, "t": "2030-01-01 00:00:00"},
        )
    before = state(env)
    result = run_restore(env, backup_id)
    assert not result.success
    msg = failure_message(result)
    assert "already exist" in msg and f"process_session: [{sess}]" in msg
    assert state(env) == before
    assert record(env, backup_id).is_reback == 0
    # the dry run lists the same conflict, writes nothing
    preview = restore.preview_restore(
        env.engine, env.engine, load_registry(env.relations_file), backup_id
    )
    assert preview.conflicts == {"process_session": [sess]} and not preview.ok
    assert preview.rows["process_session"] == 1


def test_dry_run_previews_without_writing(env, capsys, monkeypatch, tmp_path) -> None:
    sess = env.ids[3]
    backup_id = backed_up(env, sess)
    before = state(env)
    result = run_restore(env, backup_id, dry_run=True)
    assert result.success
    assert state(env) == before and record(env, backup_id).is_reback == 0
    from htd_pipelines.cli.main import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    assert main(["restore", str(backup_id), "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["rows"]["process_session"] == 1
    assert sum(doc["rows"].values()) == record(env, backup_id).total_rows


def test_dry_run_lists_missing_parent_rows(env, dialect, tmp_path, monkeypatch) -> None:
    """Tasks backed up without their nodes, previewed into an empty staging database."""
    relations = tmp_path / "tasks.yaml"
    relations.write_text(
        "types:\n  tasks:\n    root: {table: process_session, key: id}\n"
        "    tables: [{table: session_task, key: sess_id}]\n"
    )
    monkeypatch.setenv("HTD_RELATIONS_FILE", str(relations))
    sess = next(
        s
        for s in env.ids
        if env.count("session_task", f"WHERE sess_id = {s} AND node_id IS NOT NULL")
    )
    assert env.run_backup([sess], type_name="tasks", keep_source=True).success
    backup_id = list_backups("tasks", sess)[0].id
    staging = new_database(dialect, tmp_path / "staging")
    try:
        create_demo_schema(get_engine(staging))
        preview = restore.preview_restore(
            env.engine, get_engine(staging), load_registry(relations), backup_id
        )
        [(fk, missing)] = preview.missing_parents.items()
        assert fk == "session_task.node_id -> session_node.id" and missing
        assert not preview.ok and not preview.conflicts
    finally:
        drop_database(staging)


@pytest.mark.parametrize("damage", ["flip", "delete", "manifest"])
def test_damaged_backup_is_refused_before_writing(env, damage) -> None:
    sess = env.ids[2]
    backup_id = backed_up(env, sess)
    rec = record(env, backup_id)
    m = rec.manifest
    path = env.store().full(f"{m.location}/{m.table('session_task').file}")
    if damage == "flip":
        data = bytearray(Path(path).read_bytes())
        data[len(data) // 3] ^= 0x10
        Path(path).write_bytes(bytes(data))
    elif damage == "delete":
        os.remove(path)
    else:  # the catalog's manifest is edited: a row count that the file does not have
        doc = json.loads(rec.manifest_json)
        for t in doc["tables"]:
            if t["table"] == "form_data":
                t["rows"] += 1
        with env.engine.begin() as conn:
            conn.execute(
                catalog.back_up.update()
                .where(catalog.back_up.c.id == backup_id)
                .values(manifest=json.dumps(doc))
            )
    before = state(env)
    result = run_restore(env, backup_id)
    assert not result.success
    msg = failure_message(result)
    expected = {
        "flip": "session_task does not match its manifest",
        "delete": "is missing",
        "manifest": "form_data",
    }[damage]
    assert expected in msg
    assert state(env) == before and record(env, backup_id).is_reback == 0


def test_values_changed_by_a_trigger_are_put_back(env) -> None:
    sess = env.ids[4]
    backup_id = backed_up(env, sess)
    before_restore = record(env, backup_id).manifest.table("session_comment").rows
    assert before_restore > 0
    dialect = env.engine.dialect.name
    with env.engine.begin() as conn:
        if dialect == "postgresql":
            conn.execute(
                sa.text(
                    "CREATE FUNCTION scrub() RETURNS trigger AS $$ BEGIN "
                    "NEW.content := 'scrubbed'; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER scrub BEFORE INSERT ON session_comment "
                    "FOR EACH ROW EXECUTE FUNCTION scrub()"
                )
            )
        elif dialect == "sqlite":
            conn.execute(
                sa.text(
                    "CREATE TRIGGER scrub AFTER INSERT ON session_comment BEGIN "
                    "UPDATE session_comment SET content = 'scrubbed' WHERE id = NEW.id; END"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE TRIGGER scrub BEFORE INSERT ON session_comment "
                    "FOR EACH ROW SET NEW.content = 'scrubbed'"
                )
            )
    result = run_restore(env, backup_id)
    assert result.success, failure_message(result)
    backup_frames = restore.load_snapshot(env.store(), record(env, backup_id).manifest)
    expected = sorted(backup_frames["session_comment"].column("content").to_pylist(), key=str)
    with env.engine.connect() as conn:
        got = conn.execute(
            sa.text("SELECT content FROM session_comment WHERE sess_id = :s"), {"s": sess}
        ).scalars()
        assert sorted(got, key=str) == expected


def test_restore_into_a_staging_database_does_not_claim(env, dialect, tmp_path, monkeypatch):
    sess = env.ids[1]
    backup_id = backed_up(env, sess)
    staging = new_database(dialect, tmp_path / "staging")
    try:
        create_demo_schema(get_engine(staging))
        monkeypatch.setenv("HTD_STAGING_URL", staging)
        result = run_restore(env, backup_id, target_env="HTD_STAGING_URL")
        assert result.success, failure_message(result)
        with get_engine(staging).connect() as conn:
            assert conn.execute(sa.text("SELECT id FROM process_session")).scalars().all() == [sess]
        assert record(env, backup_id).is_reback == 0  # production's catalog is not claimed
        assert env.count("process_session", f"WHERE id = {sess}") == 0
    finally:
        drop_database(staging)


def _respelled(url: str) -> str:
    """The same database under another spelling: localhost for 127.0.0.1, or the SQLite file
    through a path with a `.` in it."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "sqlite":
        path = Path(u.database)
        return u.set(database=str(path.parent / "." / path.name)).render_as_string(False)
    host = "localhost" if u.host in ("127.0.0.1", None) else "127.0.0.1"
    return u.set(host=host).render_as_string(hide_password=False)


def test_the_same_database_under_another_url_is_claimed_once(env, monkeypatch) -> None:
    """`--target-env` naming the catalog's own database spelled differently (localhost vs
    127.0.0.1) is the catalog's database: the backup is claimed, and a second restore refused."""
    sess = env.ids[1]
    backup_id = backed_up(env, sess)
    monkeypatch.setenv("HTD_SAME_URL", _respelled(env.url))
    result = run_restore(env, backup_id, target_env="HTD_SAME_URL")
    assert result.success, failure_message(result)
    assert record(env, backup_id).is_reback == 1
    again = run_restore(env, backup_id, target_env="HTD_SAME_URL")
    assert not again.success and "already restored" in failure_message(again)
    assert env.count("process_session", f"WHERE id = {sess}") == 1


def test_passwords_in_run_config_are_refused(env) -> None:
    backup_id = backed_up(env, env.ids[0])
    job = env.defs().resolve_job_def("restore_job")
    cfg = restore_run_config(backup_id, "u")
    cfg["ops"]["check_backup"]["config"]["target"] = "postgresql://u:secret@127.0.0.1/x"
    result = job.execute_in_process(
        run_config=cfg, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success and "target_env" in failure_message(result)


def test_two_restores_at_once_exactly_one_wins(env) -> None:
    sess = env.ids[2]
    backup_id = backed_up(env, sess)
    registry = load_registry(env.relations_file)
    outcomes: list = []
    barrier = threading.Barrier(2)

    def attempt(uid: str) -> None:
        barrier.wait()
        try:
            restore.restore_backup(env.engine, registry, backup_id, uid=uid, run_id=uid)
            outcomes.append(("ok", uid))
        except Exception as exc:  # noqa: BLE001 - the loser's error is the point
            outcomes.append(("refused", str(exc)))

    threads = [threading.Thread(target=attempt, args=(u,)) for u in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(o[0] for o in outcomes) == ["ok", "refused"], outcomes
    winner = next(o[1] for o in outcomes if o[0] == "ok")
    assert record(env, backup_id).restored_by == winner
    assert env.count("process_session", f"WHERE id = {sess}") == 1


def test_killed_restore_leaves_nothing_and_stays_restorable(env, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HTD_CLAIM_STALE_SECONDS", "2")  # the killed run's claim goes stale
    sess = env.ids[2]
    backup_id = backed_up(env, sess)
    before = state(env)
    flag = tmp_path / "reached"
    code = (
        "from tests.support.faults import pause_after_insert;"
        f"pause_after_insert('task_log', {str(flag)!r}, seconds=120);"
        "from htd_pipelines.restore import restore_backup;"
        "from htd_pipelines.dialects.engine import get_engine;"
        "from htd_pipelines.registry.spec import load_registry;"
        f"restore_backup(get_engine({env.url!r}), load_registry({env.relations_file!r}), "
        f"{backup_id}, uid='doomed', run_id='doomed')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT)
    try:
        deadline = time.time() + 60
        while not flag.exists():
            assert proc.poll() is None, "the restore ended before reaching the fault point"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert state(env) == before  # the half-done transaction left nothing behind
    assert record(env, backup_id).is_reback == 0
    refused = run_restore(env, backup_id)  # the dead run's claim is still fresh
    assert not refused.success and "being restored by run doomed" in failure_message(refused)
    time.sleep(2.5)  # no heartbeat: the claim is stale, the next run takes it over
    result = run_restore(env, backup_id)
    assert result.success, failure_message(result)
    assert env.count("process_session", f"WHERE id = {sess}") == 1


@pytest.fixture
def chinook_env(monkeypatch, chinook_url, dialect, tmp_path):
    registry = tmp_path / "chinook.yaml"
    registry.write_text(chinook_relations_yaml(dialect))
    return make_env(monkeypatch, chinook_url, tmp_path, str(registry))


def test_chinook_round_trip(chinook_env) -> None:
    before = snapshot_database(chinook_env.url, exclude=CATALOG_TABLES)
    for customer in (54, 7):
        assert chinook_env.run_backup([customer], type_name="customer").success
    assert snapshot_database(chinook_env.url, exclude=CATALOG_TABLES) != before
    for rec in list_backups("customer"):
        result = run_restore(chinook_env, rec.id)
        assert result.success, failure_message(result)
    assert snapshot_database(chinook_env.url, exclude=CATALOG_TABLES) == before


def test_round_trip_on_the_portable_path(env, monkeypatch) -> None:
    """HTD_FAST_PATH=0: the portable read and write paths (PostgreSQL without ADBC/COPY)."""
    monkeypatch.setenv("HTD_FAST_PATH", "0")
    before = state(env)
    backup_id = backed_up(env, env.ids[1])
    result = run_restore(env, backup_id)
    assert result.success, failure_message(result)
    assert state(env) == before


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_restore_into_tables_the_planner_thinks_empty(monkeypatch, db_url, tmp_path) -> None:
    """A table emptied and vacuumed keeps its pages with `reltuples` 0: planned from that, the
    read-back's join of task_log to session_task is a nested loop over both, quadratic in
    the session's size. The restore ANALYZEs the tables it more than doubles, in its own
    transaction, so the planner knows the rows are there."""
    from htd_pipelines.demo.seed import seed_large_session
    from htd_pipelines.dialects.postgresql import ANALYZE_MIN_ROWS

    env = make_env(monkeypatch, db_url, tmp_path)
    sess_id = seed_large_session(env.engine, 12_000, seed=3)
    before = state(env)
    backup_id = backed_up(env, sess_id)

    def planner_rows(table: str) -> float:
        with env.engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT reltuples FROM pg_class WHERE relname = :t"), {"t": table}
            ).scalar()

    with env.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("session_task", "task_log"):
            conn.exec_driver_sql(f"VACUUM (TRUNCATE false) {table}")
    assert planner_rows("session_task") == 0 and planner_rows("task_log") == 0
    registry = load_registry(env.relations_file)
    restored = restore.restore_backup(env.engine, registry, backup_id, uid="u", run_id=None)
    assert restored.rows["task_log"] >= ANALYZE_MIN_ROWS
    for table in ("session_task", "task_log"):
        assert planner_rows(table) == restored.rows[table]
    assert state(env) == before
