"""Data-table backups: one dynamic partition per data table, restorable with restore_job."""

from __future__ import annotations

import pytest
from chinook import snapshot_database
from dagster import DagsterInstance, build_sensor_context
from htd_env import make_env
from sqlalchemy import text

from htd_pipelines.api import list_backups
from htd_pipelines.assets.data_tables import data_table_partitions_sensor, data_tables
from htd_pipelines.catalog import CATALOG_TABLES
from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.resources import AppDatabase, RelationRegistry
from htd_pipelines.runner import failure_message, restore_run_config


@pytest.fixture
def env(monkeypatch, db_url, tmp_path):
    env = make_env(monkeypatch, db_url, tmp_path)
    create_demo_schema(env.engine)
    seed_demo(env.engine, 8, seed=41, test_fraction=0)
    env.instance = DagsterInstance.ephemeral()
    return env


def test_partitions_backup_and_restore_of_a_data_table(env) -> None:
    ctx = build_sensor_context(
        instance=env.instance,
        resources={
            "database": AppDatabase(url=env.url),
            "relations": RelationRegistry(path=env.relations_file),
        },
    )
    result = data_table_partitions_sensor(ctx)
    [request] = result.dynamic_partitions_requests
    keys = sorted(request.partition_keys)
    with env.engine.connect() as conn:
        expected = sorted(
            conn.execute(text("SELECT DISTINCT table_key FROM data_table_row")).scalars()
        )
    assert keys == expected and keys
    env.instance.add_dynamic_partitions(data_tables.name, keys)
    assert data_table_partitions_sensor(ctx).dynamic_partitions_requests == []

    key = keys[0]
    rows = env.count("data_table_row", f"WHERE table_key = '{key}'")
    job = env.defs().resolve_job_def("data_table_backup_job")
    run = job.execute_in_process(instance=env.instance, partition_key=key, raise_on_error=False)
    assert run.success, failure_message(run)
    [record] = list_backups("dataset", key)
    assert record.manifest.table("data_table_row").rows == rows > 0
    assert env.count("data_table_row", f"WHERE table_key = '{key}'") == rows  # source kept

    # restorable the same way: the table's rows are lost, restore_job brings them back exactly
    before = snapshot_database(env.url, exclude=CATALOG_TABLES)
    with env.engine.begin() as conn:
        conn.execute(text("DELETE FROM data_table_row WHERE table_key = :k"), {"k": key})
    restore = env.defs().resolve_job_def("restore_job")
    done = restore.execute_in_process(
        run_config=restore_run_config(record.id, "ops"),
        instance=env.instance,
        raise_on_error=False,
    )
    assert done.success, failure_message(done)
    assert snapshot_database(env.url, exclude=CATALOG_TABLES) == before
