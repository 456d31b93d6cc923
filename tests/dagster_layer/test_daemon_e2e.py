"""End to end: a real ``dagster-daemon`` on the production instance (deploy/dagster.yaml, run
history on PostgreSQL through dagster-postgres) runs the sensors, which launch real runs through
the queued run coordinator; the results are checked in the application database and in the run
history.

One daemon serves the module (it takes a few seconds to come up). A sensor that was never
started ticks at once when it is turned on (``minimum_interval_seconds`` counts from its last
tick), so each scenario prepares its data first, then turns its sensor on: no 30 s wait.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterRunStatus, RunsFilter

from htd_pipelines import settings
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.cli.main import main
from htd_pipelines.demo.schema import SESSION_LINKS, create_demo_schema, process_session
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.jobs.run_config import backup_run_config, backup_tags
from htd_pipelines.store import catalog
from tests.support.daemon import (
    DEPLOY_INSTANCE,
    WORKSPACE,
    Service,
    environ,
    instance_of,
    pg_storage_env,
    production_home,
    require_postgres,
    run_tool,
    running,
    tool,
    wait_until,
)
from tests.support.dbs import drop_database, new_database
from tests.support.env import table_rows

pytestmark = pytest.mark.slow

SESSIONS = 8
WAIT_S = 60  # per scenario; a scenario takes ~10-15 s here
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass
class Stack:
    env: dict[str, str]  # DAGSTER_HOME, DAGSTER_PG_*, HTD_*: what every process here sees
    proc_env: dict[str, str]  # the environment of the subprocesses
    engine: sa.Engine  # the application database
    ids: list[int]  # the seeded sessions
    daemon: Service


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_postgres()
    tmp = tmp_path_factory.mktemp("daemon_e2e")
    scratch: list[str] = []
    try:
        storage_url = new_database("postgresql")  # Dagster's run, event-log, schedule storage
        scratch.append(storage_url)
        app_url = new_database("postgresql")  # the application database
        scratch.append(app_url)
        env = {
            "DAGSTER_HOME": str(production_home(tmp / "dagster_home")),
            **pg_storage_env(storage_url),
            settings.DATABASE_URL_ENV: app_url,
            settings.SNAPSHOT_URI_ENV: str(tmp / "snapshots"),
            settings.RELATIONS_FILE_ENV: str(settings.DEMO_RELATIONS_FILE),
            settings.HOME_ENV: str(tmp / "htd_home"),
        }
        engine = get_engine(app_url)
        create_demo_schema(engine)
        ids = seed_demo(engine, SESSIONS, seed=11, test_fraction=0)
        with instance_of(env):
            pass  # creates the storage schema before the daemon and the test touch it
        proc_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        argv = [tool("dagster-daemon"), "run", "-w", str(WORKSPACE)]
        with environ(env), running("dagster-daemon", argv, proc_env, tmp / "daemon.log") as daemon:
            yield Stack(env, proc_env, engine, ids, daemon)
    finally:
        for url in scratch:
            drop_database(url)


def start_sensor(stack: Stack, name: str) -> None:
    out = run_tool([tool("dagster"), "sensor", "start", name, "-w", str(WORKSPACE)], stack.proc_env)
    assert "Started sensor" in out, out


def session_rows(engine: sa.Engine, ids: list[int]) -> dict[str, dict]:
    """Every row of these sessions, per table (values as stored)."""
    in_ids = ", ".join(str(int(i)) for i in ids)
    rows = {"process_session": table_rows(engine, "process_session", f"WHERE id IN ({in_ids})")}
    for table, (parent, column, parent_column) in SESSION_LINKS.items():
        where = (
            f"WHERE {column} IN ({in_ids})"
            if parent == "process_session"
            else f"WHERE {column} IN (SELECT {parent_column} FROM {parent} "
            f"WHERE sess_id IN ({in_ids}))"
        )
        rows[table] = table_rows(engine, table, where)
    return rows


def backups_of(engine: sa.Engine, ids: list[int]) -> list[sa.Row]:
    bu = catalog.back_up
    with engine.connect() as conn:
        return conn.execute(
            sa.select(bu.c.id, bu.c.relation_id, bu.c.is_reback, bu.c.restored_by)
            .where(bu.c.type == "inst", bu.c.relation_id.in_([str(i) for i in ids]))
            .order_by(bu.c.id)
        ).all()


def run_records(stack: Stack, job_name: str, tags: dict[str, str] | None = None) -> list:
    with instance_of(stack.env) as instance:
        return list(instance.get_run_records(RunsFilter(job_name=job_name, tags=tags or {})))


def test_production_instance_loads_as_configured(stack: Stack) -> None:
    """deploy/dagster.yaml: psycopg2 for Dagster's storage (docs/design.md, known pitfall), queued
    runs with one restore per backup at a time, run monitoring and retries, no telemetry."""
    doc = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    assert doc["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    with instance_of(stack.env) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        for key in ("htd/backup_id", "htd/session"):
            assert {"key": key, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.run_retries_max_retries >= 1
        assert not instance.telemetry_enabled


def test_daemon_restores_requested_backups(stack: Stack, capsys) -> None:
    chosen = stack.ids[:2]
    before = session_rows(stack.engine, chosen)
    assert all(before["process_session"]) and before["session_task"]

    # back the two sessions up (and delete them) on the production instance, the CLI's way
    from htd_pipelines.definitions import build_definitions

    job = build_definitions().resolve_job_def("backup_job")
    with instance_of(stack.env) as instance:
        result = job.execute_in_process(
            run_config=backup_run_config("inst", chosen, "e2e"),
            tags=backup_tags("inst", chosen, "e2e"),
            instance=instance,
            raise_on_error=False,
        )
    assert result.success, failure_message(result)
    assert session_rows(stack.engine, chosen)["process_session"] == {}
    backup_ids = [r.id for r in backups_of(stack.engine, chosen)]
    assert len(backup_ids) == 2

    for backup_id in backup_ids:
        assert main(["request-restore", str(backup_id), "--uid", "e2e"]) == 0
    assert "restore_request_sensor will launch it" in capsys.readouterr().out

    start_sensor(stack, "restore_request_sensor")

    def restored() -> bool:
        rows = backups_of(stack.engine, chosen)
        return all(r.is_reback == 1 for r in rows) and session_rows(stack.engine, chosen) == before

    wait_until(
        restored, timeout=WAIT_S, what="the daemon to restore both backups", service=stack.daemon
    )
    assert {r.restored_by for r in backups_of(stack.engine, chosen)} == {"e2e"}

    # the run history, read back from the PostgreSQL run storage
    def finished_restores() -> list:
        records = run_records(stack, "restore_job")
        done = [r for r in records if r.dagster_run.status in FINISHED]
        return records if len(records) >= 2 and len(done) == len(records) else []

    records = wait_until(
        finished_restores, timeout=30, what="both restore runs to finish", service=stack.daemon
    )
    by_backup = {r.dagster_run.tags.get("htd/backup_id"): r.dagster_run for r in records}
    assert len(records) == 2 and set(by_backup) == {str(i) for i in backup_ids}
    for backup_id in backup_ids:
        run = by_backup[str(backup_id)]
        assert run.status == DagsterRunStatus.SUCCESS, (run.run_id, run.status)
        assert run.tags["dagster/sensor_name"] == "restore_request_sensor"
        assert run.tags["htd/uid"] == "e2e" and run.tags["htd/job"] == "restore"
    backups = run_records(stack, "backup_job", {"htd/relation_ids": ",".join(map(str, chosen))})
    assert [r.dagster_run.status for r in backups] == [DagsterRunStatus.SUCCESS]


def test_daemon_backs_up_marked_sessions(stack: Stack) -> None:
    marked = stack.ids[2:5]
    assert len(session_rows(stack.engine, marked)["process_session"]) == 3
    with stack.engine.begin() as conn:
        conn.execute(
            process_session.update()
            .where(process_session.c.id.in_(marked))
            .values(delete_marked_at=dt.datetime.now(dt.UTC), delete_marked_by="e2e")
        )

    start_sensor(stack, "deletion_marker_sensor")

    def backed_up_and_gone() -> bool:
        per_session = [r.relation_id for r in backups_of(stack.engine, marked)]
        gone = session_rows(stack.engine, marked)["process_session"] == {}
        return gone and sorted(per_session) == sorted(str(i) for i in marked)

    wait_until(
        backed_up_and_gone,
        timeout=WAIT_S,
        what="the daemon to back up and delete the 3 marked sessions",
        service=stack.daemon,
    )
    rest = session_rows(stack.engine, [i for i in stack.ids if i not in marked])
    assert len(rest["process_session"]) == SESSIONS - 3  # nothing else was touched

    def finished_backups() -> list:
        records = run_records(stack, "backup_job", {"htd/trigger": "deletion_marker"})
        done = [r for r in records if r.dagster_run.status in FINISHED]
        return records if records and len(done) == len(records) else []

    records = wait_until(
        finished_backups, timeout=30, what="the marker backups to finish", service=stack.daemon
    )
    launched: list[str] = []
    for record in records:
        run = record.dagster_run
        assert run.status == DagsterRunStatus.SUCCESS, (run.run_id, run.status)
        assert run.tags["dagster/sensor_name"] == "deletion_marker_sensor"
        assert run.tags["htd/type"] == "inst" and run.tags["htd/uid"] == "e2e"
        launched += run.tags["htd/relation_ids"].split(",")
    assert sorted(launched) == sorted(str(i) for i in marked)  # each session in exactly one run
    # one backup each, and still one a tick later: a marker never produces two backups
    assert sorted(r.relation_id for r in backups_of(stack.engine, marked)) == sorted(
        str(i) for i in marked
    )


def test_daemon_log_has_no_errors(stack: Stack) -> None:
    """Runs last in the module: the daemon stayed up and logged no error while serving it."""
    assert stack.daemon.alive(), stack.daemon.log_tail()
    log = re.sub(r"\x1b\[[0-9;]*m", "", Path(stack.daemon.log_path).read_text(errors="replace"))
    bad = [
        line for line in log.splitlines() if re.search(r" - (ERROR|CRITICAL) - |Traceback", line)
    ]
    assert not bad, "\n".join(bad[:20])
