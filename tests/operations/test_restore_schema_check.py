"""A restore is refused, before anything is written, when the schema or the registry type no
longer matches the backup (restore.check_schema): on SQLite, PostgreSQL and MariaDB, through
restore_job and through `htd-pipelines restore`, the message naming the table and column.
A nullable column added since the backup (a usual migration) does not refuse it: every
backed-up value comes back, and the new column holds NULL, as it would for any old row."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from htd_pipelines.api import list_backups
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.cli.main import main
from htd_pipelines.jobs.run_config import restore_run_config
from htd_pipelines.settings import DEMO_RELATIONS_FILE, RELATIONS_FILE_ENV
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import CATALOG_TABLES
from tests.support.chinook import snapshot_database


@pytest.fixture
def env(seeded_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    env = seeded_env(5, seed=11, test_fraction=0)
    sess = next(
        s
        for s in env.ids
        if env.count("attachment", f"WHERE sess_id = {s}")
        and env.count("session_comment", f"WHERE sess_id = {s}")
    )
    result = env.run_backup([sess])
    assert result.success, failure_message(result)
    env.backup_id = list_backups("inst", sess)[0].id
    return env


def state(env) -> dict:
    return snapshot_database(env.url, exclude=CATALOG_TABLES)


def ddl(env, *statements: str) -> None:
    with env.engine.begin() as conn:
        for sql in statements:
            conn.execute(sa.text(sql))


def registry_variant(env, monkeypatch, tmp_path: Path, edit) -> None:  # noqa: ANN001
    """HTD_RELATIONS_FILE: the demo registry with `edit` applied to its text."""
    text = Path(DEMO_RELATIONS_FILE).read_text(encoding="utf-8")
    changed = edit(text)
    assert changed != text
    path = tmp_path / "relations-now.yaml"
    path.write_text(changed, encoding="utf-8")
    monkeypatch.setenv(RELATIONS_FILE_ENV, str(path))


def drop_column(env, monkeypatch, tmp_path) -> None:
    ddl(env, "ALTER TABLE attachment DROP COLUMN thumbnail")


def add_nullable_column(env, monkeypatch, tmp_path) -> None:
    ddl(env, "ALTER TABLE session_comment ADD COLUMN mood VARCHAR(20)")


def add_not_null_column(env, monkeypatch, tmp_path) -> None:
    ddl(env, "ALTER TABLE session_comment ADD COLUMN mood VARCHAR(20) DEFAULT 'calm' NOT NULL")


def registry_lost_a_table(env, monkeypatch, tmp_path) -> None:
    registry_variant(
        env,
        monkeypatch,
        tmp_path,
        lambda text: text.replace("      - {table: session_operate_log, key: sess_id}\n", ""),
    )


def registry_gained_a_table(env, monkeypatch, tmp_path) -> None:
    ddl(
        env,
        "CREATE TABLE session_tag (id INTEGER PRIMARY KEY, sess_id BIGINT NOT NULL, "
        "tag VARCHAR(20) NOT NULL)",
    )
    registry_variant(
        env,
        monkeypatch,
        tmp_path,
        lambda text: text.replace(
            "      - {table: session_operate_log, key: sess_id}\n",
            "      - {table: session_operate_log, key: sess_id}\n"
            "      - {table: session_tag, key: sess_id}\n",
        ),
    )


CHANGES = {
    "column_dropped": (drop_column, "table attachment: column thumbnail no longer exists"),
    "not_null_column_added": (
        add_not_null_column,
        "table session_comment: new column mood is NOT NULL and not in the backup",
    ),
    "registry_lost_a_table": (
        registry_lost_a_table,
        "table session_operate_log is in the backup but no longer in the registry type",
    ),
    "registry_gained_a_table": (
        registry_gained_a_table,
        "table session_tag is in the registry type but not in the backup",
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_schema_or_registry_refuses_the_restore(
    env, change, monkeypatch, tmp_path, capsys
) -> None:
    apply, expected = CHANGES[change]
    apply(env, monkeypatch, tmp_path)
    before = state(env)

    job = env.defs().resolve_job_def("restore_job")  # built now: the changed registry
    result = job.execute_in_process(
        run_config=restore_run_config(env.backup_id, "restorer"),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    message = failure_message(result)
    assert f"restore of backup {env.backup_id} refused" in message
    assert expected in message

    code = main(["restore", str(env.backup_id)])
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err and err.rstrip().splitlines()[-1].startswith("error: run ")

    # nothing written: no row restored, the backup not claimed, still restorable later
    assert state(env) == before
    with env.engine.connect() as conn:
        record = catalog.get_backup(conn, env.backup_id)
    assert (record.is_reback, record.restored_by) == (0, None)


def test_the_dry_run_lists_the_same_problem(env, monkeypatch, tmp_path, capsys) -> None:
    import json

    drop_column(env, monkeypatch, tmp_path)
    code = main(["restore", str(env.backup_id), "--dry-run", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 3 and not doc["ok"]
    assert "table attachment: column thumbnail no longer exists" in doc["problems"]


def test_a_nullable_column_added_since_the_backup_restores_with_null(env, monkeypatch, tmp_path):
    rows_before = env.count("session_comment")
    add_nullable_column(env, monkeypatch, tmp_path)
    result = (
        env.defs()
        .resolve_job_def("restore_job")
        .execute_in_process(
            run_config=restore_run_config(env.backup_id, "restorer"),
            instance=DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
    )
    assert result.success, failure_message(result)
    restored = env.count("session_comment") - rows_before
    assert restored > 0
    assert env.count("session_comment", "WHERE mood IS NULL") == env.count("session_comment")
