"""backup_job on SQLite, PostgreSQL and MariaDB: snapshots, manifest, catalog, delete."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from htd_pipelines import api, backup, delete
from htd_pipelines.api import list_backups, load_backup
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.demo.schema import SESSION_TABLES
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.store import catalog
from tests.support.env import norm, table_rows

ALL_TABLES = ("process_session", *SESSION_TABLES)


@pytest.fixture
def env(seeded_env):
    env = seeded_env(6, seed=7)
    return env


def owned_counts(env, sess_id) -> dict[str, int]:
    out = {}
    for t in ALL_TABLES:
        if t == "process_session":
            out[t] = env.count(t, f"WHERE id = {sess_id}")
        elif t == "task_log":
            out[t] = env.count(
                t, f"WHERE task_id IN (SELECT id FROM session_task WHERE sess_id = {sess_id})"
            )
        else:
            out[t] = env.count(t, f"WHERE sess_id = {sess_id}")
    return out


def database_state(env) -> dict:
    return {t: table_rows(env.engine, t) for t in ALL_TABLES}


def test_backup_captures_records_and_deletes_exactly_one_session(env) -> None:
    target = env.ids[1]
    before = database_state(env)
    expected = owned_counts(env, target)
    assert sum(expected.values()) > 10

    instance = DagsterInstance.ephemeral()
    result = env.run_backup([target], instance=instance)
    assert result.success, failure_message(result)

    # catalog row
    [record] = list_backups("inst", target)
    assert (record.version, record.is_reback, record.uid) == (1, 0, "tester")
    assert record.source_deleted == 1
    m = record.manifest
    assert {t.table: t.rows for t in m.tables} == expected
    assert [t.table for t in m.tables][0] == "process_session"
    assert m.registry_sha256 == load_registry(env.relations_file).get("inst").digest()
    # snapshot files: zstd Parquet, sha256 as recorded
    store = env.store()
    for t in m.tables:
        path = f"{m.location}/{t.file}"
        assert store.file_digest(path) == (t.sha256, t.bytes)
        meta = store.parquet_file(path).metadata
        assert meta.num_rows == t.rows
        if meta.num_row_groups:
            assert meta.row_group(0).column(0).compression == "ZSTD"
    # attachment remote files are in the manifest
    urls = {r[1]["remote_url"] for r in before["attachment"].items() if r[1]["sess_id"] == target}
    assert {f["url"] for f in m.remote_files()} == {u for u in urls if u is not None}

    # the session is gone, every other row untouched
    after = database_state(env)
    assert all(v == 0 for v in owned_counts(env, target).values())
    for t in ALL_TABLES:
        removed = {k for k in before[t] if k not in after[t]}
        assert len(removed) == expected[t], t
        assert all(after[t][k] == before[t][k] for k in after[t]), t

    # the snapshot holds the very values that were deleted
    frames = load_backup("inst", target)
    for t in ALL_TABLES:
        snap = {}
        pk = [c for c in frames[t].columns if c == "id"]
        for row in frames[t].to_dict(orient="records"):
            snap[tuple(row[c] for c in pk)] = {
                k: norm(None if _na(v) else v) for k, v in row.items()
            }
        assert snap == {k: before[t][k] for k in before[t] if k not in after[t]}, t

    # the asset and the operation log
    mats = instance.fetch_materializations(AssetKey("backup_catalog"), limit=10).records
    assert len(mats) == 1
    md = mats[0].asset_materialization.metadata
    assert md["relation_id"].value == str(target) and md["backup_id"].value == record.id
    with env.engine.connect() as conn:
        log = conn.execute(sa.select(catalog.operation_log)).mappings().all()
    assert [(r["action"], r["status"]) for r in log] == [("backup", "ok"), ("delete", "ok")]
    assert all(r["run_id"] == result.run_id and r["uid"] == "tester" for r in log)
    assert json.loads(log[1]["counts"]) == expected


def _na(v) -> bool:
    try:
        import pandas as pd

        return not isinstance(v, list | dict | bytes) and bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def test_keep_source_and_versions_never_overwrite(env) -> None:
    target = env.ids[0]
    before = owned_counts(env, target)
    assert env.run_backup([target], keep_source=True).success
    assert owned_counts(env, target) == before
    first = list_backups("inst", target)[0]
    first_files = {t.file: t.sha256 for t in first.manifest.tables}
    assert env.run_backup([target], keep_source=True).success
    records = list_backups("inst", target)
    assert [r.version for r in records] == [2, 1]
    assert records[0].manifest.location != first.manifest.location
    # the first version's files are untouched
    store = env.store()
    for t in first.manifest.tables:
        assert store.file_digest(f"{first.manifest.location}/{t.file}")[0] == first_files[t.file]
    assert len(load_backup("inst", target, version=1)["session_task"]) == before["session_task"]


def test_batch_of_sessions_gets_one_backup_each(env) -> None:
    batch = env.ids[2:5]
    expected = {s: owned_counts(env, s) for s in batch}
    result = env.run_backup(batch)
    assert result.success, failure_message(result)
    for s in batch:
        [rec] = list_backups("inst", s)
        assert {t.table: t.rows for t in rec.manifest.tables} == expected[s]
        assert all(v == 0 for v in owned_counts(env, s).values())
    assert owned_counts(env, env.ids[0])["process_session"] == 1


def test_unknown_relation_id_is_a_clear_error_and_changes_nothing(env) -> None:
    before = database_state(env)
    result = env.run_backup([env.ids[0], 999_999])
    assert not result.success
    assert "unknown relation id(s) 999999 for type 'inst'" in failure_message(result)
    assert database_state(env) == before
    assert list_backups() == []
    bad = env.run_backup(["abc"])
    assert "relation id 'abc' is not a valid value of process_session.id" in failure_message(bad)


def _plan_extract_record(env, ids):
    registry = load_registry(env.relations_file)
    store = env.store()
    plan = backup.plan_backup(
        env.engine,
        registry,
        store,
        type_name="inst",
        relation_ids=ids,
        uid="u",
        keep_source=False,
        run_id="test-run",
    )
    resolved = backup.resolved(env.engine, registry, "inst", "test-run")
    extracts = [
        backup.extract_table(env.engine, registry, store, plan, t.name) for t in resolved.tables
    ]
    recorded = backup.record_backup(env.engine, registry, store, plan, extracts)
    return registry, store, plan, recorded


def test_row_added_meanwhile_aborts_the_delete(env) -> None:
    target = env.ids[1]
    registry, store, plan, recorded = _plan_extract_record(env, [target])
    before = database_state(env)
    with env.engine.begin() as conn:  # the application adds a comment after the extract
        conn.execute(
            sa.text(
                "INSERT INTO session_comment (sess_id, author_uid, content, created_at) "
                "VALUES (:s, 'late', 'added meanwhile', :t)"
            ),
            {"s": target, "t": "2024-01-01 00:00:00"},
        )
    with pytest.raises(backup.BackupError, match="table session_comment: the rows to delete"):
        delete.delete_source(env.engine, registry, store, plan, recorded)
    after = database_state(env)
    assert after["session_comment"].keys() - before["session_comment"].keys()
    for t in ALL_TABLES:  # nothing else was deleted: the transaction rolled back
        assert before[t].keys() <= after[t].keys(), t
    with env.engine.connect() as conn:
        rec = catalog.get_backup(conn, recorded[0].backup_id)
        failed = (
            conn.execute(
                sa.select(catalog.operation_log).where(catalog.operation_log.c.status == "failed")
            )
            .mappings()
            .all()
        )
    assert rec.source_deleted == 0
    assert failed and "session_comment" in failed[0]["message"]
    # marked: shown as such, and not offered as the session's newest backup
    assert (rec.delete_failed, rec.state) == (1, "delete failed")
    with pytest.raises(catalog.CatalogError, match="no backup"):
        api.find_backup("inst", target)
    assert api.find_backup("inst", target, rec.version).id == rec.id  # asked for explicitly


def test_an_older_catalog_gets_the_delete_failed_column(env) -> None:
    catalog.ensure_catalog(env.engine)
    with env.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE back_up DROP COLUMN delete_failed")
    catalog.forget_catalog_cache()
    catalog.ensure_catalog(env.engine)
    [rec] = delete.backup_sessions(
        env.engine, load_registry(env.relations_file), env.store(), type_name="inst",
        relation_ids=[env.ids[0]], uid="u", run_id="upgraded",
    )  # fmt: skip
    assert api.find_backup("inst", env.ids[0]).id == rec.backup_id


def test_tampered_snapshot_refuses_the_delete(env) -> None:
    target = env.ids[1]
    registry, store, plan, recorded = _plan_extract_record(env, [target])
    m = list_backups("inst", target)[0].manifest
    path = store.full(f"{m.location}/{m.table('session_task').file}")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    before = owned_counts(env, target)
    with pytest.raises(Exception, match="session_task does not match its manifest"):
        delete.delete_source(env.engine, registry, store, plan, recorded)
    assert owned_counts(env, target) == before


def test_snapshot_schema_keeps_exact_types(env) -> None:
    target = env.ids[1]
    assert env.run_backup([target], keep_source=True).success
    m = list_backups("inst", target)[0].manifest
    store = env.store()
    schema = pq.read_schema(store.full(f"{m.location}/{m.table('form_data').file}"))
    assert str(schema.field("amount").type).startswith(("decimal128(18, 4)", "string"))
    log_schema = pq.read_schema(store.full(f"{m.location}/{m.table('task_log').file}"))
    assert str(log_schema.field("big_counter").type) == "int64"
    att = pq.read_schema(store.full(f"{m.location}/{m.table('attachment').file}"))
    assert str(att.field("checksum").type) == "binary"
    created = str(log_schema.field("created_at").type)
    expected = {
        "postgresql": "timestamp[us, tz=UTC]",
        "mysql": "timestamp[us]",  # MariaDB DATETIME(6): naive UTC, no zone type
        "sqlite": "string",  # SQLite stores dates as text: carried exactly as stored
    }
    assert created == expected[env.engine.dialect.name]


def test_a_session_deleted_during_the_backup_is_not_recorded(env) -> None:
    """Someone else deletes the session between the plan and the extracts of a run that does
    not hold one read snapshot (ops in other processes): no empty backup is recorded as its
    newest version. (With the snapshot held, the backup is the session as it was at the plan.)"""
    from htd_pipelines.dialects import read

    target = env.ids[0]
    registry, store = load_registry(env.relations_file), env.store()
    plan = backup.plan_backup(
        env.engine, registry, store, type_name="inst", relation_ids=[target], uid="u",
        keep_source=False, run_id="gone-run",
    )  # fmt: skip
    rtype = backup.resolved(env.engine, registry, "inst", "gone-run")
    read.close_snapshot(plan.run_id)  # as when the extracts run in processes of their own
    with env.engine.begin() as conn:  # the application deletes the session, children first
        for tplan in reversed(rtype.tables):
            conn.execute(sa.delete(tplan.table).where(tplan.where_owned()), {"ids": [target]})
    extracts = [
        backup.extract_table(env.engine, registry, store, plan, t.name) for t in rtype.tables
    ]
    with pytest.raises(backup.BackupError, match=f"session\\(s\\) {target} .* disappeared"):
        backup.record_backup(env.engine, registry, store, plan, extracts)
    assert list_backups("inst", target) == []
