"""Declared schedules (HTD_SCHEDULES_FILE) and test_session_cleanup: skip while the job runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import (
    DagsterRunStatus,
    DefaultScheduleStatus,
    Definitions,
    RunRequest,
    SkipReason,
    build_schedule_context,
    instance_for_test,
)

from htd_pipelines.jobs.cleanup import test_session_cleanup_job as cleanup_job
from htd_pipelines.schedules.cleanup import test_session_cleanup as cleanup_schedule
from htd_pipelines.schedules.declared import (
    PACKAGED_SCHEDULES_FILE,
    DeclaredScheduleError,
    load_declared_schedules,
)
from tests.support.env import make_env

JOBS = {"backup_job", "restore_job", "test_session_cleanup_job"}

GOOD = """\
schedules:
  - name: clear_test_sessions_daily
    cron: "0 3 * * *"
    timezone: Asia/Shanghai
    enabled: true
    job: test_session_cleanup_job
    run_config: {ops: {clean_test_sessions: {config: {older_than_days: 7}}}}
    description: "imported from crontab row 1 (clearTestSessions)"
  - name: keep_12_weekly
    cron: "0 9 * * 1"
    timezone: Europe/Berlin
    enabled: false
    job: backup_job
    run_config:
      ops: {plan_backup: {config: {type: inst, relation_ids: ["12"], keep_source: true}}}
    tags: {htd/type: inst, htd/relation_id: 12}
"""


def write(tmp_path: Path, text: str, name: str = "schedules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def start_run(instance, job_def=cleanup_job):
    """A run of the job in STARTED status, as if a tick's run were still going."""
    run = instance.create_run_for_job(
        job_def, status=DagsterRunStatus.STARTED, tags={"htd/test": "in-flight"}
    )
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    return run


def test_declared_schedules_have_cron_timezone_status_and_description(tmp_path) -> None:
    daily, weekly = load_declared_schedules(write(tmp_path, GOOD), JOBS)
    assert (daily.name, daily.cron_schedule, daily.execution_timezone, daily.job_name) == (
        "clear_test_sessions_daily",
        "0 3 * * *",
        "Asia/Shanghai",
        "test_session_cleanup_job",
    )
    assert daily.default_status == DefaultScheduleStatus.RUNNING
    assert daily.description == "imported from crontab row 1 (clearTestSessions)"
    assert (weekly.execution_timezone, weekly.default_status) == (
        "Europe/Berlin",
        DefaultScheduleStatus.STOPPED,
    )


def test_declared_schedule_skips_while_its_job_runs(tmp_path) -> None:
    daily, weekly = load_declared_schedules(write(tmp_path, GOOD), JOBS)
    with instance_for_test() as instance:
        request = daily(build_schedule_context(instance=instance))
        assert isinstance(request, RunRequest)
        assert request.run_config == {
            "ops": {"clean_test_sessions": {"config": {"older_than_days": 7}}}
        }
        assert request.tags == {"htd/schedule": "clear_test_sessions_daily"}

        run = start_run(instance)
        skipped = daily(build_schedule_context(instance=instance))
        assert isinstance(skipped, SkipReason)
        assert "test_session_cleanup_job is still running" in skipped.skip_message
        assert run.run_id in skipped.skip_message

        # another job's schedule is not held up, and carries its declared tags
        other = weekly(build_schedule_context(instance=instance))
        assert isinstance(other, RunRequest)
        assert other.tags == {
            "htd/type": "inst",
            "htd/relation_id": "12",
            "htd/schedule": "keep_12_weekly",
        }

        instance.report_run_failed(instance.get_run_by_id(run.run_id))
        again = daily(build_schedule_context(instance=instance))
        assert isinstance(again, RunRequest)
        # each tick gets its own copy of the run config
        again.run_config["ops"]["clean_test_sessions"]["config"]["older_than_days"] = 1
        assert daily(build_schedule_context(instance=instance)).run_config == request.run_config


def test_test_session_cleanup_skips_while_its_job_runs() -> None:
    with instance_for_test() as instance:
        request = cleanup_schedule(build_schedule_context(instance=instance))
        assert isinstance(request, RunRequest)
        assert request.tags == {"htd/schedule": "test_session_cleanup"}
        run = start_run(instance)
        skipped = cleanup_schedule(build_schedule_context(instance=instance))
        assert isinstance(skipped, SkipReason) and run.run_id in skipped.skip_message
        instance.report_run_canceled(instance.get_run_by_id(run.run_id))
        assert isinstance(cleanup_schedule(build_schedule_context(instance=instance)), RunRequest)


def test_definitions_load_the_declared_file(tmp_path, monkeypatch) -> None:
    # settings first: importing the module builds its `defs` (the CLI's) from them
    make_env(monkeypatch, "postgresql://nobody@127.0.0.1:1/nowhere", tmp_path)
    from htd_pipelines.definitions import build_definitions

    monkeypatch.setenv("HTD_SCHEDULES_FILE", str(write(tmp_path, GOOD)))
    defs = build_definitions()
    Definitions.validate_loadable(defs)
    assert defs.resolve_schedule_def("keep_12_weekly").job_name == "backup_job"
    assert defs.resolve_schedule_def("test_session_cleanup")

    monkeypatch.delenv("HTD_SCHEDULES_FILE")  # the packaged file: the demo's legacy rows
    defs = build_definitions()
    Definitions.validate_loadable(defs)
    assert defs.resolve_schedule_def("clear_test_sessions_hourly_old").default_status == (
        DefaultScheduleStatus.STOPPED
    )

    monkeypatch.setenv("HTD_SCHEDULES_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(DeclaredScheduleError, match="missing.yaml .HTD_SCHEDULES_FILE.: schedules"):
        build_definitions()


def test_packaged_file_loads() -> None:
    names = [s.name for s in load_declared_schedules(PACKAGED_SCHEDULES_FILE, JOBS)]
    assert "clear_test_sessions_daily" in names


def entry(**fields) -> str:
    base = {
        "name": "nightly",
        "cron": '"0 3 * * *"',
        "timezone": "UTC",
        "job": "backup_job",
    }
    base.update(fields)
    lines = [f"    {k}: {v}" for k, v in base.items() if v is not None]
    return "  -\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            entry(job="verify_backups_job"),
            "schedules[0] (nightly): unknown job 'verify_backups_job'",
        ),
        (entry(cron='"61 * * * *"'), "schedules[0] (nightly): invalid cron string '61 * * * *'"),
        (entry(cron='"0 0 * *"'), "schedules[0] (nightly): invalid cron string '0 0 * *'"),
        (entry(timezone="Asia/Nowhere"), "schedules[0] (nightly): unknown timezone 'Asia/Nowhere'"),
        (entry(name="nightly-backup"), "schedules[0] (nightly-backup): invalid name"),
        (entry(name="class"), "schedules[0] (class): invalid name"),
        (
            entry(name="test_session_cleanup"),
            "schedules[0] (test_session_cleanup): name 'test_session_cleanup' is taken by a "
            "schedule defined in code",
        ),
        (entry() + entry(), "schedules[1] (nightly): duplicate name 'nightly' (also schedules[0])"),
        (entry(timezone=None), "schedules[0] (nightly): missing timezone"),
        (entry(enabled="yes please"), "schedules[0] (nightly): enabled must be true or false"),
        (entry(timzone="UTC"), "schedules[0] (nightly): unknown field(s) timzone"),
        (entry(run_config="[1, 2]"), "schedules[0] (nightly): run_config must be a mapping"),
        (entry(tags="{dagster/priority: 1}"), "tags may not use the reserved dagster/ prefix"),
        ("  - just a string\n", "schedules[0]: expected a mapping"),
    ],
)
def test_invalid_declarations_name_the_file_and_the_entry(tmp_path, body, message) -> None:
    path = write(tmp_path, "schedules:\n" + body)
    with pytest.raises(DeclaredScheduleError) as info:
        load_declared_schedules(path, JOBS)
    assert f"{path}: {message}" in str(info.value) or (
        str(path) in str(info.value) and message in str(info.value)
    ), str(info.value)


def test_every_problem_is_reported_at_once(tmp_path) -> None:
    body = entry(cron='"bad"') + entry(name="other", job="nope", timezone="Nowhere/Land")
    path = write(tmp_path, "schedules:\n" + body)
    with pytest.raises(DeclaredScheduleError) as info:
        load_declared_schedules(path, JOBS)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}: schedules[0] (nightly): invalid cron string 'bad' (5 fields: minute hour day "
        "month weekday)",
        f"{path}: schedules[1] (other): unknown timezone 'Nowhere/Land' (an IANA name such as "
        "Asia/Shanghai or UTC)",
        f"{path}: schedules[1] (other): unknown job 'nope' (jobs: backup_job, restore_job, "
        "test_session_cleanup_job)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schedules: [\n", "not valid YAML"),
        ("- name: x\n", "expected a top-level mapping with only a 'schedules:' list"),
        ("schedules: {name: x}\n", "'schedules' must be a list of declarations"),
    ],
)
def test_malformed_files(tmp_path, text, message) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DeclaredScheduleError, match=message) as info:
        load_declared_schedules(path, JOBS)
    assert str(info.value).startswith(f"{path}: ")


def test_empty_file_declares_nothing(tmp_path) -> None:
    assert load_declared_schedules(write(tmp_path, "# nothing yet\n"), JOBS) == []
    assert load_declared_schedules(write(tmp_path, "schedules:\n"), JOBS) == []
