"""restore_request_sensor with build_sensor_context against real databases."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, build_sensor_context

from htd_pipelines.api import list_backups
from htd_pipelines.cli.main import main
from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.resources import AppDatabase
from htd_pipelines.sensors.restore_request import restore_request_sensor
from htd_pipelines.store import catalog
from tests.support.env import make_env


@pytest.fixture
def env(monkeypatch, db_url, tmp_path):
    env = make_env(monkeypatch, db_url, tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    create_demo_schema(env.engine)
    env.ids = seed_demo(env.engine, 4, seed=5, test_fraction=0)
    assert env.run_backup(env.ids).success
    env.backups = {int(r.relation_id): r.id for r in list_backups("inst")}
    return env


def tick(env, instance, cursor=None):
    ctx = build_sensor_context(
        instance=instance, cursor=cursor, resources={"database": AppDatabase(url=env.url)}
    )
    return restore_request_sensor(ctx)


def test_requests_launch_one_run_each_and_the_cursor_moves_on(env, capsys) -> None:
    instance = DagsterInstance.ephemeral()
    first = tick(env, instance)
    assert first.run_requests == [] and "no new restore requests" in first.skip_reason.skip_message

    a, b = env.backups[env.ids[0]], env.backups[env.ids[1]]
    assert main(["request-restore", str(a), "--uid", "ops"]) == 0
    assert "requested" in capsys.readouterr().out
    with env.engine.begin() as conn:  # the application writes a request itself
        conn.execute(
            catalog.back_up.update()
            .where(catalog.back_up.c.id == b)
            .values(restore_requested_at=catalog.utcnow(), restore_requested_by="app")
        )
    result = tick(env, instance)
    runs = result.run_requests
    assert [r.run_config["ops"]["check_backup"]["config"]["backup_id"] for r in runs] == [a, b]
    assert len({r.run_key for r in runs}) == 2
    assert runs[0].tags["htd/relation_id"] == str(env.ids[0]) and runs[0].tags["htd/uid"] == "ops"

    # the cursor survives (the daemon stores it): the same requests are not launched again
    again = tick(env, instance, cursor=result.cursor)
    assert again.run_requests == []
    # without the cursor the run_keys are the same, so Dagster would not launch twice either
    assert {r.run_key for r in tick(env, instance).run_requests} == {r.run_key for r in runs}


def test_already_restored_backups_are_skipped_with_a_reason(env, capsys) -> None:
    instance = DagsterInstance.ephemeral()
    backup_id = env.backups[env.ids[2]]
    with env.engine.begin() as conn:
        conn.execute(
            catalog.back_up.update()
            .where(catalog.back_up.c.id == backup_id)
            .values(restore_requested_at=catalog.utcnow(), is_reback=1)
        )
    result = tick(env, instance)
    assert result.run_requests == []
    assert f"backup {backup_id}" in result.skip_reason.skip_message
    assert "already restored" in result.skip_reason.skip_message
    assert main(["request-restore", str(backup_id)]) == 1
    assert "already restored" in capsys.readouterr().err


def test_a_burst_of_requests_drains_without_duplicates(env) -> None:
    instance = DagsterInstance.ephemeral()
    more = seed_demo(env.engine, 120, seed=9, test_fraction=0)
    assert env.run_backup(more, keep_source=True).success
    with env.engine.begin() as conn:
        conn.execute(
            catalog.back_up.update().values(
                restore_requested_at=catalog.utcnow(), restore_requested_by="burst"
            )
        )
    total = len(list_backups())
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        result = tick(env, instance, cursor)
        if not result.run_requests:
            break
        seen += [r.run_key for r in result.run_requests]
        cursor = result.cursor
    assert len(seen) == len(set(seen)) == total


def test_a_sensor_run_keeps_its_tags_and_an_untagged_run_gets_the_same(env) -> None:
    """restore_job's first op tags a run launched without tags as the sensor tags its runs."""
    backup_id = env.backups[env.ids[3]]
    assert main(["request-restore", str(backup_id), "--uid", "ops"]) == 0
    with DagsterInstance.ephemeral() as instance:
        [request] = tick(env, instance).run_requests
        job = env.defs().resolve_job_def("restore_job")
        run = job.execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags
        )
        stored = instance.get_run_by_id(run.run_id).tags
        assert {k: stored[k] for k in request.tags} == request.tags
        added = {k for k in stored if k.startswith("htd/")} - set(request.tags) - {"htd/job"}
        assert added == set()  # nothing the sensor left out

        # the same restore from the launchpad (run config only): refused, as restored once,
        # but tagged the same way
        again = job.execute_in_process(
            run_config=request.run_config, instance=instance, raise_on_error=False
        )
        assert not again.success
        tags = instance.get_run_by_id(again.run_id).tags
        assert {k: tags.get(k) for k in request.tags} == request.tags
