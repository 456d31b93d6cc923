"""`htd-pipelines crontab import`: the legacy crontab rows become schedule declarations."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml
from dagster import DefaultScheduleStatus, Definitions, validate_run_config

from htd_pipelines.cli.main import main
from htd_pipelines.definitions import job_names
from htd_pipelines.demo.schema import create_demo_schema, crontab
from htd_pipelines.demo.seed import seed_legacy_crontab
from htd_pipelines.schedules import crontab_import as ci
from htd_pipelines.schedules.declared import (
    PACKAGED_SCHEDULES_FILE,
    load_declared_schedules,
)
from tests.support.env import make_env

JOBS = {"backup_job", "restore_job", "test_session_cleanup_job"}
DOWN_URL = "postgresql://nobody@127.0.0.1:1/nowhere"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def legacy(monkeypatch, db_url, tmp_path):
    env = make_env(monkeypatch, db_url, tmp_path)
    monkeypatch.delenv("HTD_SCHEDULES_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    create_demo_schema(env.engine)
    env.crontab_ids = seed_legacy_crontab(env.engine)
    return env


def test_import_writes_the_mapped_rows_and_reports_the_rest(legacy, capsys, tmp_path) -> None:
    ids = legacy.crontab_ids
    out_file = tmp_path / "conf" / "schedules.yaml"
    code, out, err = run(capsys, "crontab", "import", "--out", str(out_file))
    assert code == 0, err
    doc = yaml.safe_load(out_file.read_text(encoding="utf-8"))
    by_name = {d["name"]: d for d in doc["schedules"]}
    assert set(by_name) == {"clear_test_sessions_daily", "clear_test_sessions_hourly_old"}

    daily = by_name["clear_test_sessions_daily"]
    assert (daily["cron"], daily["timezone"], daily["enabled"], daily["job"]) == (
        "0 3 * * *",
        "Asia/Shanghai",
        True,
        "test_session_cleanup_job",
    )
    assert daily["run_config"] == {
        "ops": {"clean_test_sessions": {"config": {"older_than_days": 7}}}
    }
    assert daily["description"].startswith(
        f"imported from crontab row {ids['clear_test_sessions_daily']} (clearTestSessions)"
    )
    assert "每天凌晨 3 点清理测试会话" in daily["description"]

    hourly = by_name["clear_test_sessions_hourly_old"]
    assert (hourly["cron"], hourly["enabled"]) == ("0 * * * *", False)
    assert hourly["timezone"] == "Asia/Shanghai"  # NULL in the crontab: the legacy default
    assert "timezone was NULL, defaulted to Asia/Shanghai" in hourly["description"]
    assert hourly["run_config"]["ops"]["clean_test_sessions"]["config"] == {"older_than_days": 1}

    # reported, not written: unknown targets and the invalid cron string
    problems = {
        "verify_backups_nightly": "target 'verifyBackups': params sample have no mapping",
        "send_weekly_report": "unknown target 'sendWeeklyReport'",
        "clear_test_sessions_broken": "invalid cron string '61 * * * *'",
    }
    for name, reason in problems.items():
        line = next(ln for ln in out.splitlines() if f"row {ids[name]} {name}:" in ln)
        assert reason in line
    assert "3 row(s) not imported" in out
    assert "2 schedule(s) declared (1 running, 1 stopped)" in out
    assert f"wrote {out_file}" in out

    # the written file loads as the code location loads it
    schedules = {s.name: s for s in load_declared_schedules(out_file, JOBS)}
    assert schedules["clear_test_sessions_daily"].default_status == DefaultScheduleStatus.RUNNING
    assert schedules["clear_test_sessions_hourly_old"].default_status == (
        DefaultScheduleStatus.STOPPED
    )
    assert schedules["clear_test_sessions_daily"].execution_timezone == "Asia/Shanghai"
    assert schedules["clear_test_sessions_hourly_old"].cron_schedule == "0 * * * *"


def test_imported_file_loads_in_the_definitions(legacy, capsys, monkeypatch, tmp_path) -> None:
    out_file = tmp_path / "schedules.yaml"
    monkeypatch.setenv("HTD_SCHEDULES_FILE", str(out_file))
    code, out, _ = run(capsys, "crontab", "import")  # default --out: HTD_SCHEDULES_FILE
    assert code == 0 and out_file.exists()
    assert "the code location loads it with" not in out  # already the configured file

    from htd_pipelines.definitions import build_definitions

    defs = build_definitions()
    Definitions.validate_loadable(defs)
    daily = defs.resolve_schedule_def("clear_test_sessions_daily")
    assert daily.job_name == "test_session_cleanup_job"
    assert defs.resolve_schedule_def("test_session_cleanup").name == "test_session_cleanup"
    # the mapped run_config is valid config of the job
    doc = yaml.safe_load(out_file.read_text(encoding="utf-8"))
    for decl in doc["schedules"]:
        validate_run_config(defs.resolve_job_def(decl["job"]), decl["run_config"])


def test_dry_run_prints_the_yaml_and_writes_nothing(legacy, capsys, tmp_path) -> None:
    code, out, err = run(capsys, "crontab", "import", "--dry-run")
    assert code == 0
    assert out.startswith("# Generated by `htd-pipelines crontab import`")
    doc = yaml.safe_load(out)
    assert [d["name"] for d in doc["schedules"]] == [
        "clear_test_sessions_daily",
        "clear_test_sessions_hourly_old",
    ]
    assert "invalid cron string '61 * * * *'" in err and "dry run: nothing written" in err
    assert not (tmp_path / "schedules.yaml").exists()

    code, out, _ = run(capsys, "crontab", "import")  # default --out: ./schedules.yaml
    assert code == 0 and (tmp_path / "schedules.yaml").exists()
    assert "HTD_SCHEDULES_FILE=" in out


def test_no_crontab_table_is_an_error(monkeypatch, db_url, tmp_path, capsys) -> None:
    make_env(monkeypatch, db_url, tmp_path)
    code, _, err = run(capsys, "crontab", "import", "--out", str(tmp_path / "s.yaml"))
    assert code == 1 and "error: no crontab table in" in err
    assert not (tmp_path / "s.yaml").exists()


def test_a_hand_written_file_is_not_replaced_without_force(legacy, capsys, tmp_path) -> None:
    target = tmp_path / "mine.yaml"
    target.write_text("schedules: []\n")
    code, _, err = run(capsys, "crontab", "import", "--out", str(target))
    assert code == 1 and "was not generated by `htd-pipelines crontab import`" in err
    assert target.read_text() == "schedules: []\n"
    code, out, _ = run(capsys, "crontab", "import", "--out", str(target), "--force")
    assert code == 0 and f"replaced {target}" in out
    code, out, _ = run(capsys, "crontab", "import", "--out", str(target))  # generated: replaced
    assert code == 0


def test_backup_targets_and_params_are_mapped_exactly(legacy, capsys, tmp_path) -> None:
    rows = [
        ("nightly_keep", "backupSessions", {"type": "inst", "relation_ids": [12, "13"]}),
        ("purge_one", "processDelete", {"type": "inst", "relation_id": 7, "uid": "ops"}),
        ("purge_nothing", "processDelete", {"type": "inst"}),
        ("purge_unknown_type", "processDelete", {"type": "order", "relation_ids": [1]}),
        ("clear_big_batches", "clearTestSessions", {"older_than_days": 2.5, "batch_size": 50}),
        ("clear_extra", "clearTestSessions", {"older_than_days": 3, "dry": True}),
        ("bad tz", "clearTestSessions", {"older_than_days": 3}),
    ]
    with legacy.engine.begin() as conn:
        conn.execute(
            sa.insert(crontab),
            [
                {
                    "name": name,
                    "rule": "*/15 * * * *",
                    "timezone": "Mars/Olympus" if name == "bad tz" else "UTC",
                    "target": target,
                    "params": params,
                    "status": 1,
                }
                for name, target, params in rows
            ],
        )
    out_file = tmp_path / "s.yaml"
    code, out, _ = run(capsys, "crontab", "import", "--out", str(out_file))
    assert code == 0
    by_name = {d["name"]: d for d in yaml.safe_load(out_file.read_text())["schedules"]}

    keep = by_name["nightly_keep"]
    assert keep["job"] == "backup_job"
    assert keep["run_config"] == {
        "ops": {
            "plan_backup": {
                "config": {"type": "inst", "relation_ids": ["12", "13"], "keep_source": True}
            }
        }
    }
    assert keep["tags"] == {"htd/type": "inst", "htd/relation_ids": "12,13"}
    purge = by_name["purge_one"]["run_config"]["ops"]["plan_backup"]["config"]
    assert purge == {"type": "inst", "relation_ids": ["7"], "keep_source": False, "uid": "ops"}
    assert by_name["purge_one"]["tags"]["htd/relation_id"] == "7"
    big = by_name["clear_big_batches"]["run_config"]["ops"]["clean_test_sessions"]["config"]
    assert big == {"older_than_days": 2.5, "batch_size": 50}

    reported = {
        "purge_nothing": "params must name the backup type and the relation ids",
        "purge_unknown_type": "unknown backup type 'order'",
        "clear_extra": "params dry have no mapping",
        "bad tz": "unknown timezone 'Mars/Olympus'",
    }
    for name, reason in reported.items():
        assert name not in by_name
        line = next(ln for ln in out.splitlines() if f" {name}: " in ln)
        assert reason in line, line


def test_verify_backups_is_imported_once_the_job_exists() -> None:
    rows = [
        {
            "id": 2,
            "name": "verify-backups nightly",
            "rule": "30 4 * * *",
            "timezone": None,
            "target": "verifyBackups",
            "params": None,
            "status": 0,
            "remark": None,
        }
    ]
    unknown = ci.convert_rows(rows, JOBS)
    assert not unknown.declarations
    assert "not a job of this code location" in unknown.problems[0].reason

    known = ci.convert_rows(rows, JOBS | {"verify_backups_job"})
    [decl] = known.declarations
    assert decl["name"] == "verify_backups_nightly"  # made a valid Dagster name
    assert decl["job"] == "verify_backups_job" and decl["enabled"] is False
    assert "legacy name 'verify-backups nightly'" in decl["description"]
    # parameters without a known mapping are reported, not passed on
    with_params = ci.convert_rows([{**rows[0], "params": '{"sample": 5}'}], {"verify_backups_job"})
    assert "params sample have no mapping" in with_params.problems[0].reason


def test_packaged_file_is_the_demo_rows_through_the_import(monkeypatch, tmp_path) -> None:
    """htd_pipelines/schedules/imported.yaml is generated: regenerate it with
    `python -m htd_pipelines.schedules.crontab_import` when this fails."""
    # the code location is loaded for its job names: run-time settings as in every test
    make_env(monkeypatch, DOWN_URL, tmp_path)
    text = PACKAGED_SCHEDULES_FILE.read_text(encoding="utf-8")
    assert text.startswith("# Generated by `htd-pipelines crontab import`")
    assert text == ci.demo_yaml(job_names())
    names = [s.name for s in load_declared_schedules(PACKAGED_SCHEDULES_FILE, JOBS)]
    assert names == ["clear_test_sessions_daily", "clear_test_sessions_hourly_old"]
