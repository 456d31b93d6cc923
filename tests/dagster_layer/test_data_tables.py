"""Data-table backups: one dynamic partition per data table, restorable with restore_job."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)
from sqlalchemy import text

from htd_pipelines.api import list_backups
from htd_pipelines.assets.data_tables import data_tables
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.jobs.run_config import restore_run_config
from htd_pipelines.resources import AppDatabase, RelationRegistry
from htd_pipelines.schedules.data_tables import data_table_backup_schedule
from htd_pipelines.sensors.data_tables import data_table_partitions_sensor
from htd_pipelines.store.catalog import CATALOG_TABLES
from tests.support.chinook import snapshot_database


@pytest.fixture
def env(seeded_env):
    env = seeded_env(8, seed=41, test_fraction=0)
    with DagsterInstance.ephemeral() as instance:  # disposed: its temporary folder too
        env.instance = instance
        yield env


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
    tags = env.instance.get_run_by_id(run.run_id).tags  # the asset tags its run like sessions'
    assert (tags["htd/type"], tags["htd/relation_id"]) == ("dataset", key)
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


def test_data_table_backup_schedule_skips_while_its_job_runs() -> None:
    from htd_pipelines.definitions import build_definitions

    job_def = build_definitions().resolve_job_def("data_table_backup_job")
    when = dt.datetime(2030, 1, 2, 2, 0, tzinfo=dt.UTC)
    with instance_for_test() as instance:

        def tick():  # noqa: ANN202
            context = build_schedule_context(instance=instance, scheduled_execution_time=when)
            return data_table_backup_schedule(context)

        assert isinstance(tick(), SkipReason)  # no partitions yet
        instance.add_dynamic_partitions(data_tables.name, ["t1", "t2"])
        requests = tick()
        assert [(r.partition_key, r.run_key) for r in requests] == [
            ("t1", "t1:2030-01-02"),
            ("t2", "t2:2030-01-02"),
        ]
        assert all(isinstance(r, RunRequest) for r in requests)
        assert requests[0].tags["htd/schedule"] == "data_table_backup_schedule"

        # one run of yesterday's tick still going: the whole tick is skipped, with the reason
        run = instance.create_run_for_job(
            job_def, status=DagsterRunStatus.STARTED, tags={"htd/test": "in-flight"}
        )
        skipped = tick()
        assert isinstance(skipped, SkipReason)
        assert "data_table_backup_job is still running" in skipped.skip_message
        assert run.run_id in skipped.skip_message

        instance.report_run_failed(instance.get_run_by_id(run.run_id))
        assert [r.partition_key for r in tick()] == ["t1", "t2"]
