"""Incremental versions of live sessions on SQLite, PostgreSQL and MariaDB: protective backups
(full, then incremental), compose, and restoring a live session to any version exactly."""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from htd_pipelines import settings
from htd_pipelines.backup import BackupError
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.demo.schema import (
    attachment,
    create_demo_schema,
    data_table_row,
    form_data,
    process_session,
    session_comment,
    session_task,
    task_log,
)
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.jobs.incremental import protective_run_config, restore_version_run_config
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.restore import RestoreRefused
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import CATALOG_TABLES
from htd_pipelines.versions import chain, diff, protective
from htd_pipelines.versions import restore as version_restore
from tests.support.chinook import snapshot_database
from tests.support.env import make_env

UTC = dt.UTC


@pytest.fixture
def env(monkeypatch, db_url, tmp_path):
    env = make_env(monkeypatch, db_url, tmp_path)
    monkeypatch.delenv(settings.CHANGE_COLUMN.name, raising=False)
    create_demo_schema(env.engine)
    env.ids = seed_demo(env.engine, 5, seed=11, test_fraction=0)
    env.registry = load_registry(env.relations_file)
    env.sess = rich_session(env)
    return env


def rich_session(env) -> int:
    """The session with the most of every kind of row (tasks with logs, forms, files...)."""

    def score(s: int) -> tuple:
        tasks_with_logs = env.count(
            "session_task",
            f"WHERE sess_id = {s} AND id IN (SELECT task_id FROM task_log)",
        )
        return min(
            tasks_with_logs // 2,
            env.count("form_data", f"WHERE sess_id = {s}"),
            env.count("attachment", f"WHERE sess_id = {s}"),
            env.count("session_comment", f"WHERE sess_id = {s}"),
            env.count("data_table_row", f"WHERE sess_id = {s}"),
        ), s

    best = max(score(s) for s in env.ids)
    assert best[0] >= 1, "the seed has no session with every kind of row"
    return best[1]


def state(env) -> dict:
    return snapshot_database(env.url, exclude=CATALOG_TABLES)


def protect(env, ids=None, **kw) -> list[protective.VersionOutcome]:
    return protective.protective_backup(
        env.engine,
        env.registry,
        env.store(),
        type_name="inst",
        relation_ids=[env.sess] if ids is None else ids,
        uid="tester",
        run_id=kw.pop("run_id", "test-run"),
        **kw,
    )


def run_protective_job(env, ids, **config):
    job = env.defs().resolve_job_def("protective_backup_job")
    run_config = protective_run_config("inst", ids, "tester")
    run_config["ops"]["protective_backup"]["config"].update(config)
    return job.execute_in_process(
        run_config=run_config, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )


def restore(env, version: int, **kw) -> version_restore.VersionRestore:
    return version_restore.restore_version(
        env.engine, env.registry, "inst", env.sess, version, "restorer", "restore-run", **kw
    )


def versions(env) -> list[catalog.BackupRecord]:
    with env.engine.connect() as conn:
        found = catalog.find_backups(conn, type_name="inst", relation_id=str(env.sess))
    return sorted(found, key=lambda r: r.version)


def ids_of(env, table: sa.Table, where) -> list[int]:  # noqa: ANN001
    with env.engine.connect() as conn:
        return conn.execute(sa.select(table.c.id).where(where).order_by(table.c.id)).scalars().all()


def tasks_with_logs(env) -> list[int]:
    return ids_of(
        env,
        session_task,
        sa.and_(
            session_task.c.sess_id == env.sess,
            session_task.c.id.in_(sa.select(task_log.c.task_id)),
        ),
    )


def logs_of(env, task_id: int) -> list[int]:
    return ids_of(env, task_log, task_log.c.task_id == task_id)


NOW = dt.datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


def change_2(env) -> None:
    """New task logs (NULL message, big integer), a form with NULL JSON, new decimal and
    timestamp, the session renamed with new JSON meta."""
    t1 = tasks_with_logs(env)[0]
    form = ids_of(env, form_data, form_data.c.sess_id == env.sess)[0]
    with env.engine.begin() as conn:
        conn.execute(
            task_log.insert(),
            [
                {
                    "task_id": t1,
                    "action": "comment",
                    "message": "新的 ✅\ttab",
                    "big_counter": None,
                    "created_at": NOW,
                },
                {
                    "task_id": t1,
                    "action": "approve",
                    "message": None,
                    "big_counter": -1,
                    "created_at": NOW,
                },
                {
                    "task_id": t1,
                    "action": "x",
                    "message": "",
                    "big_counter": 2**62 + 1,
                    "created_at": NOW,
                },
            ],
        )
        conn.execute(
            form_data.update()
            .where(form_data.c.id == form)
            .values(
                amount=Decimal("-98765432101234.5678"),
                data=None,
                ratio=None,
                submitted_at=NOW,
            )
        )
        conn.execute(
            process_session.update()
            .where(process_session.c.id == env.sess)
            .values(name="renamed « v2 »", meta={"k": [1, {"x": None}], "emoji": "🔥"})
        )


def change_3(env) -> None:
    """A task and its logs deleted, a new task with logs (JSON payload, due timestamp), a log's
    message set to NULL and its counter past 2^53."""
    tasks = tasks_with_logs(env)
    gone = tasks[1]
    keep_log = logs_of(env, tasks[0])[0]
    with env.engine.begin() as conn:
        conn.execute(task_log.delete().where(task_log.c.task_id == gone))
        conn.execute(session_task.delete().where(session_task.c.id == gone))
        new_task = conn.execute(
            session_task.insert().values(
                sess_id=env.sess,
                title="added in v3",
                status=1,
                priority=2,
                due_at=NOW + dt.timedelta(days=3, microseconds=1),
                payload={"steps": [1, 2, 3], "nested": {"a": None}},
                created_at=NOW,
            )
        ).inserted_primary_key[0]
        conn.execute(
            task_log.insert(),
            [
                {"task_id": new_task, "action": "create", "message": "v3 log 1", "created_at": NOW},
                {"task_id": new_task, "action": "assign", "message": "v3 log 2", "created_at": NOW},
            ],
        )
        conn.execute(
            task_log.update()
            .where(task_log.c.id == keep_log)
            .values(message=None, big_counter=2**53 + 1)
        )


def change_4(env) -> None:
    """Two logs deleted, binary checksum changed, comment text changed, form JSON and decimal."""
    t1 = tasks_with_logs(env)[0]
    doomed = logs_of(env, t1)[-2:]
    form = ids_of(env, form_data, form_data.c.sess_id == env.sess)[0]
    with env.engine.begin() as conn:
        conn.execute(task_log.delete().where(task_log.c.id.in_(doomed)))
        conn.execute(
            attachment.update()
            .where(attachment.c.sess_id == env.sess)
            .values(checksum=b"\x00\xff" * 16)
        )
        comment = ids_of(env, session_comment, session_comment.c.sess_id == env.sess)[0]
        conn.execute(
            session_comment.update()
            .where(session_comment.c.id == comment)
            .values(content="édité \\ v4 \n 第二行 😀")
        )
        conn.execute(
            form_data.update()
            .where(form_data.c.id == form)
            .values(data={"a": 1, "b": [True, None]}, amount=Decimal("0.0001"))
        )


def change_5(env) -> None:
    """A form row of NULLs added, a comment deleted, a data-table row's JSON changed."""
    with env.engine.begin() as conn:
        conn.execute(form_data.insert().values(sess_id=env.sess, form_key="v5_empty"))
        comment = ids_of(env, session_comment, session_comment.c.sess_id == env.sess)[-1]
        conn.execute(session_comment.delete().where(session_comment.c.id == comment))
        row = ids_of(env, data_table_row, data_table_row.c.sess_id == env.sess)[0]
        conn.execute(
            data_table_row.update()
            .where(data_table_row.c.id == row)
            .values(row_data={"cells": ["x", None, 1.5]})
        )


def test_a_chain_of_five_versions_restores_each_version_exactly(env) -> None:
    [first] = protect(env)
    assert (first.status, first.version) == ("full", 1)
    states = {1: state(env)}
    sizes = {1: first.bytes}
    for version, change in enumerate((change_2, change_3, change_4, change_5), start=2):
        change(env)
        if version == 3:  # one of them through the job: its metadata holds both sizes
            result = run_protective_job(env, [env.sess])
            assert result.success, failure_message(result)
            [doc] = result.output_for_node("protective_backup")
            outcome = protective.VersionOutcome(**doc)
            meta = {
                e.event_specific_data.metadata.get("incremental_bytes")
                for e in result.all_events
                if e.is_successful_output
            }
            assert {m.value for m in meta if m is not None} == {outcome.bytes}
        else:
            [outcome] = protect(env)
        assert (outcome.status, outcome.version, outcome.base_version) == (
            "incremental",
            version,
            version - 1,
        )
        states[version] = state(env)
        sizes[version] = outcome.bytes
        assert outcome.full_bytes == first.bytes
        print(
            f"v{version}: added {outcome.added} changed {outcome.changed} deleted "
            f"{outcome.deleted}: {outcome.bytes} bytes (full v1: {first.bytes} bytes)"
        )
    recs = versions(env)
    assert [r.manifest.kind for r in recs] == ["full"] + ["incremental"] * 4
    v3 = recs[2].manifest
    assert v3.base_version == 2
    logs = v3.table("task_log")
    tasks = v3.table("session_task")
    assert (tasks.added_rows, tasks.deleted_rows) == (1, 1)
    assert logs.added_rows == 2 and logs.changed_rows == 1 and logs.deleted_rows >= 1
    assert logs.deleted_file and logs.deleted_sha256 and logs.rows == 3
    assert "process_session" not in {t.table for t in v3.tables}  # unchanged tables: no files
    v2 = recs[1].manifest
    assert v2.table("process_session").changed_rows == 1
    assert v2.table("form_data").changed_rows == 1 and v2.table("task_log").added_rows == 3
    for v in (2, 3, 4, 5):
        assert sizes[v] < sizes[1] / 2, sizes  # only what changed is stored
    with env.engine.connect() as conn:
        logged = conn.execute(
            sa.select(catalog.operation_log.c.counts).where(
                catalog.operation_log.c.action == "incremental_backup",
                catalog.operation_log.c.status == "ok",
            )
        ).scalars()
        counts = [json.loads(c) for c in logged]
    assert len(counts) == 4
    assert {"added": 3, "changed": 0, "deleted": 0} in [c.get("task_log") for c in counts]

    # compose() of each version is that version's rows
    tables = chain.compose_version(env.engine, "inst", env.sess, 4, env.store())
    assert tables["task_log"].num_rows == versions_rows(env, states[4], "task_log")

    # every version, in any order, comes back exactly (every column of every row)
    for k in (1, 3, 5, 2, 4):
        result = restore(env, k)
        assert result.restored and state(env) == states[k], f"version {k}"
    assert restore(env, 4).restored is False  # already there: nothing to do
    # each restore kept the state it replaced as a version of its own
    assert len(versions(env)) > 5
    with env.engine.connect() as conn:
        actions = conn.execute(
            sa.select(catalog.operation_log.c.action).where(
                catalog.operation_log.c.action == "restore_version"
            )
        ).all()
    assert len(actions) == 6


def test_differential_and_incremental_versions_compose_and_restore_exactly(env) -> None:
    """Differential versions hold every change since the full version and sit on top of it;
    incremental ones sit on the previous version. Mixed, each composes and restores exactly,
    and a differential survives the loss of the versions between it and its full version."""
    [first] = protect(env)
    states = {1: state(env)}
    change_2(env)
    [v2] = protect(env)  # incremental on top of 1
    states[2] = state(env)
    change_3(env)
    [v3] = protect(env, differential=True)  # differential: changes 2 and 3, on top of 1
    states[3] = state(env)
    change_4(env)
    result = run_protective_job(env, [env.sess], differential=True)  # through the job
    assert result.success, failure_message(result)
    [doc] = result.output_for_node("protective_backup")
    v4 = protective.VersionOutcome(**doc)
    states[4] = state(env)
    assert (v2.status, v2.base_version) == ("incremental", 1)
    assert (v3.status, v3.base_version) == ("incremental", 1)
    assert (v4.status, v4.base_version) == ("incremental", 1)
    recs = versions(env)
    assert [r.manifest.delta for r in recs] == [None, "incremental", "differential", "differential"]
    # the differential holds what changed since version 1: more than change 3 alone
    assert sum(v3.added.values()) + sum(v3.changed.values()) + sum(v3.deleted.values()) > sum(
        v2.added.values()
    ) + sum(v2.changed.values()) + sum(v2.deleted.values())
    assert protect(env, differential=True)[0].status == "unchanged"
    # version 2 (the incremental) is not needed by the differentials: drop its files
    v2_dir = env.snapshot_dir / recs[1].manifest.location
    for f in v2_dir.glob("*.parquet"):
        f.unlink()
    for k in (1, 4, 3):
        result = restore(env, k)
        assert result.restored and state(env) == states[k], f"version {k}"
    with pytest.raises(Exception, match="version 2"):  # its own chain is broken, by name
        chain.compose_version(env.engine, "inst", env.sess, 2, env.store())


def versions_rows(env, snapshot: dict, table: str) -> int:
    if table == "task_log":
        tasks = {r[0] for r in snapshot["session_task"] if r[1] == env.sess}
        return sum(1 for r in snapshot["task_log"] if r[1] in tasks)
    raise AssertionError(table)


def test_an_unchanged_session_gets_no_new_version(env, monkeypatch) -> None:
    assert [o.status for o in protect(env)] == ["full"]
    assert [o.status for o in protect(env)] == ["unchanged"]  # against the full version
    assert len(versions(env)) == 1
    change_5(env)
    assert [o.status for o in protect(env)] == ["incremental"]
    again = protect(env)
    assert [(o.status, o.version) for o in again] == [("unchanged", 2)]
    assert len(versions(env)) == 2

    # with the change column, tables that have it are compared by max(updated_at), keys, rows
    monkeypatch.setenv(settings.CHANGE_COLUMN.name, "updated_at")
    result = run_protective_job(env, [env.sess])
    assert result.success, failure_message(result)
    assert [o["status"] for o in result.output_for_node("protective_backup")] == ["unchanged"]
    with env.engine.begin() as conn:  # the ORM-style update bumps updated_at
        conn.execute(
            process_session.update().where(process_session.c.id == env.sess).values(name="renamed")
        )
    result = run_protective_job(env, [env.sess])
    [doc] = result.output_for_node("protective_backup")
    assert (doc["status"], doc["changed"]) == ("incremental", {"process_session": 1})
    assert versions(env)[-1].manifest.state_marks["process_session"]["change_column"] == (
        "updated_at"
    )
    # a table without the column is compared by its rows' digest
    with env.engine.begin() as conn:
        conn.execute(
            data_table_row.update()
            .where(data_table_row.c.sess_id == env.sess)
            .values(row_data=None)
        )
    [o] = protect(env, change_column="updated_at")
    assert o.status == "incremental" and set(o.changed) == {"data_table_row"}
    # by design, a change that leaves the change column as it was is not seen on that table
    with env.engine.begin() as conn:
        stamp = conn.execute(
            sa.select(process_session.c.updated_at).where(process_session.c.id == env.sess)
        ).scalar_one()
        conn.execute(
            process_session.update()
            .where(process_session.c.id == env.sess)
            .values(name="silent", updated_at=stamp)
        )
    assert [o.status for o in protect(env, change_column="updated_at")] == ["unchanged"]
    # ...while the row digest (no change column) sees it
    [o] = protect(env)
    assert o.status == "incremental" and o.changed == {"process_session": 1}


def build_chain(env) -> dict[int, dict]:
    """Full v1 + incrementals v2..v4; the database state after each."""
    protect(env)
    states = {1: state(env)}
    for version, change in ((2, change_2), (3, change_3), (4, change_4)):
        change(env)
        [o] = protect(env)
        assert (o.status, o.version) == ("incremental", version)
        states[version] = state(env)
    return states


@pytest.mark.parametrize("damage", ["file", "deleted_file", "flip", "catalog_row"])
def test_a_broken_link_refuses_the_restore_naming_the_version(env, damage) -> None:
    states = build_chain(env)
    v3 = versions(env)[2]
    m = v3.manifest
    logs = m.table("task_log")
    path = Path(env.store().full(f"{m.location}/{logs.file}"))
    if damage == "file":
        os.remove(path)
    elif damage == "deleted_file":
        os.remove(path.with_name(logs.deleted_file))
    elif damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        with env.engine.begin() as conn:
            conn.execute(catalog.back_up.delete().where(catalog.back_up.c.id == v3.id))
    before, catalog_before = state(env), versions(env)
    with pytest.raises(RestoreRefused) as refused:
        restore(env, 4)
    assert "version 3 of inst" in str(refused.value)
    assert "nothing was written" in str(refused.value)
    assert state(env) == before and versions(env) == catalog_before
    with pytest.raises(diff.ChainError, match="version 3 of inst"):
        chain.compose_version(env.engine, "inst", env.sess, 4, env.store())
    # versions before the broken link still come back; the state replaced is kept as a new
    # full version (its latest version cannot be a base any more)
    result = restore(env, 2)
    assert state(env) == states[2]
    assert result.protective.status == "full" and "version 3" in result.protective.reason
    assert result.protective.version == 5
    assert restore(env, 5).restored and state(env) == states[4]


def test_the_restore_job_refuses_a_session_changed_meanwhile(env, monkeypatch) -> None:
    build_chain(env)
    real = version_restore.compose_version

    def compose_then_write(*args, **kw):  # noqa: ANN002, ANN003
        out = real(*args, **kw)
        if compose_then_write.armed:  # the application writes after the protective backup
            compose_then_write.armed = False
            t = tasks_with_logs(env)[0]
            with env.engine.begin() as conn:
                conn.execute(task_log.insert().values(task_id=t, action="late", created_at=NOW))
        return out

    compose_then_write.armed = True
    monkeypatch.setattr(version_restore, "compose_version", compose_then_write)
    job = env.defs().resolve_job_def("restore_version_job")
    result = job.execute_in_process(
        run_config=restore_version_run_config("inst", env.sess, 1, "restorer"),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    msg = failure_message(result)
    assert "changed after its current state was backed up" in msg and "task_log" in msg
    after_write = state(env)
    # nothing of the restore was written: the late row is there, the rest as it was
    assert env.count("task_log", "WHERE action = 'late'") == 1
    # the next attempt backs the late row up too, and succeeds
    result = job.execute_in_process(
        run_config=restore_version_run_config("inst", env.sess, 4, "restorer"),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success, failure_message(result)
    doc = result.output_for_node("restore_version")
    assert doc["protective"]["status"] == "incremental"
    assert doc["protective"]["added"] == {"task_log": 1}
    assert env.count("task_log", "WHERE action = 'late'") == 0
    restore(env, doc["protective"]["version"])
    assert state(env) == after_write


def test_a_failure_midway_rolls_everything_back(env, monkeypatch) -> None:
    states = build_chain(env)
    real = version_restore.insert_rows

    def failing(conn, tplan, table):  # noqa: ANN001
        if tplan.name == "form_data":
            raise RuntimeError("disk full (simulated)")
        return real(conn, tplan, table)

    monkeypatch.setattr(version_restore, "insert_rows", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        restore(env, 1)
    assert state(env) == states[4]  # deletes and inserts so far were rolled back
    with env.engine.connect() as conn:
        failed = conn.execute(
            sa.select(catalog.operation_log.c.message).where(
                catalog.operation_log.c.action == "restore_version",
                catalog.operation_log.c.status == "failed",
            )
        ).scalars()
        assert "disk full" in next(iter(failed))
    monkeypatch.setattr(version_restore, "insert_rows", real)
    restore(env, 1)
    assert state(env) == states[1]


def test_changed_sessions_are_found_without_naming_them(env) -> None:
    result = run_protective_job(env, [], max_sessions=2)
    assert result.success, failure_message(result)
    first = result.output_for_node("protective_backup")
    assert [o["status"] for o in first] == ["full", "full"]
    outcomes = protect(env, ids=[], max_sessions=10)
    assert sorted(o.status for o in outcomes) == ["full"] * 3 + ["unchanged"] * 2
    change_5(env)
    outcomes = protect(env, ids=[], max_sessions=10)
    changed = [o for o in outcomes if o.status != "unchanged"]
    assert [(o.relation_id, o.status) for o in changed] == [(str(env.sess), "incremental")]


def test_an_unknown_session_is_named(env) -> None:
    with pytest.raises(BackupError, match="999999"):
        protect(env, ids=[999999])
    # a session that is gone comes back with restore_job, not as a live session
    with pytest.raises(RestoreRefused, match="does not exist"):
        version_restore.restore_version(
            env.engine, env.registry, "inst", 999999, 1, "restorer", "r"
        )


def test_versions_cli(env, capsys, monkeypatch, tmp_path) -> None:
    from htd_pipelines.cli.main import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    assert main(["versions", "backup", "--type", "inst", str(env.sess)]) == 0
    assert "full version 1" in capsys.readouterr().out
    v1 = state(env)
    change_3(env)
    assert main(["versions", "backup", "--type", "inst", str(env.sess)]) == 0
    out = capsys.readouterr().out
    assert "full version 1" not in out and "incremental version 2 on top of 1" in out
    assert main(["versions", "list", "--type", "inst", str(env.sess), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["kind"], v["base_version"]) for v in listed] == [
        (1, "full", None),
        (2, "incremental", 1),
    ]
    assert listed[1]["added"] == 3 and listed[1]["deleted"] >= 2
    assert main(["versions", "list", "--type", "inst", str(env.sess)]) == 0
    assert "+3 ~1" in capsys.readouterr().out
    assert main(["versions", "restore", "--type", "inst", str(env.sess), "--version", "1"]) == 0
    assert "restored to version 1" in capsys.readouterr().out
    assert state(env) == v1
    code = main(["versions", "restore", "--type", "inst", str(env.sess), "--version", "9"])
    assert code == 1 and "version 9 of inst" in capsys.readouterr().err
    change_4(env)
    assert main(["versions", "backup", "--type", "inst", str(env.sess), "--differential"]) == 0
    assert "differential version 3 on top of 1" in capsys.readouterr().out
    assert main(["versions", "list", "--type", "inst", str(env.sess), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["delta"] for v in listed] == [None, "incremental", "differential"]


def test_diff_and_apply_keep_nulls_nans_and_types() -> None:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("f", pa.float64()),
            ("d", pa.decimal128(18, 4)),
            ("b", pa.binary()),
            ("t", pa.timestamp("us", tz="UTC")),
        ]
    )
    ts = dt.datetime(2024, 1, 1, tzinfo=UTC)
    base = pa.Table.from_pylist(
        [
            {"id": 1, "f": float("nan"), "d": Decimal("1.5000"), "b": b"\x00", "t": ts},
            {"id": 2, "f": None, "d": None, "b": None, "t": None},
            {"id": 3, "f": 1.0, "d": Decimal("2.0000"), "b": b"", "t": ts},
        ],
        schema=schema,
    )
    current = pa.Table.from_pylist(
        [
            {"id": 1, "f": float("nan"), "d": Decimal("1.5000"), "b": b"\x00", "t": ts},
            {"id": 3, "f": 1.0, "d": Decimal("2.0000"), "b": None, "t": ts},  # "" -> NULL
            {"id": 4, "f": 2.0, "d": None, "b": b"\xff", "t": None},
        ],
        schema=schema,
    )
    d = diff.diff_table(base, current, ["id"])
    assert (d.added, d.changed, d.deleted.column("id").to_pylist()) == (1, 1, [2])
    rebuilt = diff.apply_changes(
        base, d.upserts, d.deleted, ["id"], changed_rows=d.changed, where="test"
    )
    assert diff.row_digest(rebuilt, ["id"]) == diff.row_digest(current, ["id"])
    assert diff.row_digest(base, ["id"]) != diff.row_digest(current, ["id"])
    assert diff.diff_table(current, current, ["id"]).empty
    with pytest.raises(diff.ChainError, match="does not apply"):
        diff.apply_changes(
            current, d.upserts, d.deleted, ["id"], changed_rows=d.changed, where="test"
        )


def test_incrementals_are_read_composed_kept_with_their_bases_and_not_restored_alone(env):
    """The rest of the system knows a version is not a whole session by itself."""
    from htd_pipelines.api import load_backup
    from htd_pipelines.restore import RestoreRefused, restore_backup
    from htd_pipelines.retention import plan_prune
    from htd_pipelines.verify import verify_backups

    states = build_chain(env)
    v3 = versions(env)[2]
    # restore_job refuses an incremental id, pointing to `versions restore`
    with pytest.raises(RestoreRefused, match="versions restore --type inst"):
        restore_backup(env.engine, env.registry, v3.id, uid="u", run_id="r")
    assert state(env) == states[4]
    # the read API gives the session's state at that version, not just its changes
    frames = load_backup("inst", env.sess, version=3)
    composed = chain.compose_version(env.engine, "inst", env.sess, 3)
    assert {t: len(df) for t, df in frames.items()} == {t: v.num_rows for t, v in composed.items()}
    # verification covers every file of an incremental
    outcome = verify_backups(
        env.engine, env.registry, backup_ids=None, run_id="v", recheck_after=dt.timedelta(0)
    )
    assert outcome.ok and len(outcome.checked) == 4
    # retention never prunes the base of a kept version
    policy = env.registry.types["inst"]
    import dataclasses

    from htd_pipelines.registry.spec import Registry, Retention

    strict = Registry(
        env.registry.path,
        {
            **env.registry.types,
            "inst": dataclasses.replace(
                policy, retention=Retention(keep_last=1, allow_unrestored=True)
            ),
        },
    )
    decisions = {
        d.version: d
        for d in plan_prune(env.engine, strict, "inst")
        if d.relation_id == str(env.sess)
    }
    assert not any(d.prune for d in decisions.values())
    assert decisions[1].reason == "the base of kept version 4"
