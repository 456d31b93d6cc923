"""Runs launched without tags (the Dagster launchpad: run config only) tag themselves: the first
op of each job adds htd/type, htd/relation_id(s), htd/uid (and htd/backup_id for a restore), so
the runs list filters by session and a failure alert names the type and the session."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, build_run_status_sensor_context

from htd_pipelines.api import list_backups
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.jobs.incremental import protective_run_config, restore_version_run_config
from htd_pipelines.jobs.run_config import backup_run_config, restore_run_config
from htd_pipelines.resources.alerts import AlertSink
from htd_pipelines.sensors.alerts import RUN_FAILURE_SENSOR, run_failure_alert

HTD_KEYS = ("htd/type", "htd/relation_id", "htd/relation_ids", "htd/uid", "htd/backup_id")


@pytest.fixture
def env(seeded_env):
    env = seeded_env(4, seed=23, test_fraction=0)
    with DagsterInstance.ephemeral() as instance:  # disposed: its temporary folder too
        env.instance = instance
        yield env


def launch(env, job_name: str, run_config: dict, tags: dict | None = None):
    """As the launchpad does: run config, no tags (unless given)."""
    job = env.defs().resolve_job_def(job_name)
    return job.execute_in_process(
        run_config=run_config, instance=env.instance, tags=tags or {}, raise_on_error=False
    )


def htd_tags(env, result) -> dict[str, str]:
    """The htd/ session tags of the run as stored (what the runs list and the sensors see)."""
    tags = env.instance.get_run_by_id(result.run_id).tags
    return {k: v for k, v in tags.items() if k in HTD_KEYS}


def test_an_untagged_backup_run_tags_itself(env) -> None:
    sess = env.ids[0]
    result = launch(env, "backup_job", backup_run_config("inst", [sess], "alice"))
    assert result.success, failure_message(result)
    assert htd_tags(env, result) == {
        "htd/type": "inst",
        "htd/relation_ids": str(sess),
        "htd/relation_id": str(sess),
        "htd/uid": "alice",
    }
    assert env.instance.get_run_by_id(result.run_id).tags["htd/job"] == "backup"

    # a batch: htd/relation_ids lists the sessions (no single htd/relation_id), no uid: no tag
    batch = [str(env.ids[1]), str(env.ids[2])]
    result = launch(env, "backup_job", backup_run_config("inst", batch, keep_source=True))
    assert result.success, failure_message(result)
    assert htd_tags(env, result) == {"htd/type": "inst", "htd/relation_ids": ",".join(batch)}


def test_tags_the_launcher_set_are_kept(env) -> None:
    sess = str(env.ids[0])
    given = {"htd/uid": "cli-user", "htd/relation_id": sess}
    result = launch(env, "backup_job", backup_run_config("inst", [sess], "alice"), given)
    assert result.success, failure_message(result)
    assert htd_tags(env, result) == {
        "htd/type": "inst",
        "htd/relation_ids": sess,
        "htd/relation_id": sess,
        "htd/uid": "cli-user",
    }


def test_a_refused_untagged_backup_still_names_its_session(env) -> None:
    result = launch(env, "backup_job", backup_run_config("inst", ["987654"], "alice"))
    assert not result.success
    assert htd_tags(env, result) == {
        "htd/type": "inst",
        "htd/relation_ids": "987654",
        "htd/relation_id": "987654",
        "htd/uid": "alice",
    }


def failure_alert(env, result):
    context = build_run_status_sensor_context(
        sensor_name=RUN_FAILURE_SENSOR,
        dagster_instance=env.instance,
        dagster_run=env.instance.get_run_by_id(result.run_id),
        dagster_event=result.get_run_failure_event(),
        resources={"alerts": AlertSink(webhook_url=None)},
    )
    return run_failure_alert(context.for_run_failure())


def test_an_untagged_restore_run_tags_itself_from_the_catalog(env) -> None:
    sess = env.ids[3]
    assert env.run_backup([sess], instance=env.instance).success
    backup_id = list_backups("inst", sess)[0].id

    result = launch(env, "restore_job", restore_run_config(backup_id, "bob"))
    assert result.success, failure_message(result)
    expected = {
        "htd/type": "inst",
        "htd/relation_id": str(sess),
        "htd/backup_id": str(backup_id),
        "htd/uid": "bob",
    }
    assert htd_tags(env, result) == expected
    assert env.instance.get_run_by_id(result.run_id).tags["htd/job"] == "restore"

    # restored twice: refused, and the alert names the type and the session from the tags
    again = launch(env, "restore_job", restore_run_config(backup_id, "bob"))
    assert not again.success and "already restored" in failure_message(again)
    assert htd_tags(env, again) == expected
    alert = failure_alert(env, again)
    assert (alert.kind, alert.type, alert.relation_id, alert.backup_id) == (
        "restore_twice",
        "inst",
        str(sess),
        str(backup_id),
    )


def test_a_restore_of_an_unknown_backup_is_tagged_with_what_is_known(env) -> None:
    result = launch(env, "restore_job", restore_run_config(424242))
    assert not result.success and "424242" in failure_message(result)
    assert htd_tags(env, result) == {"htd/backup_id": "424242"}


def test_untagged_version_runs_tag_themselves(env) -> None:
    sess = env.ids[1]
    result = launch(env, "protective_backup_job", protective_run_config("inst", [sess], "carol"))
    assert result.success, failure_message(result)
    assert htd_tags(env, result) == {
        "htd/type": "inst",
        "htd/relation_ids": str(sess),
        "htd/relation_id": str(sess),
        "htd/uid": "carol",
    }
    [record] = list_backups("inst", sess)
    result = launch(
        env, "restore_version_job", restore_version_run_config("inst", sess, record.version, "dan")
    )
    assert result.success, failure_message(result)
    assert htd_tags(env, result) == {
        "htd/type": "inst",
        "htd/relation_id": str(sess),
        "htd/uid": "dan",
    }
