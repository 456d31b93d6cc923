"""Run the code location's jobs on the configured Dagster instance (so every run is in the UI).

The CLI's launcher: builds the definitions now (the environment of this call decides the
resources), executes a job in process on the instance of DAGSTER_HOME and, when the run
fails, raises the alert the run-failure sensor would raise for a run launched elsewhere.

Dagster and the definitions are imported where a run starts, not when the CLI starts: a
command that launches nothing (`--help`, `backups`, a refusal) does not pay for them.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from htd_pipelines import settings
from htd_pipelines.dialects.engine import get_engine

if TYPE_CHECKING:  # for the annotations only: the functions import these where they run
    from dagster import DagsterInstance, DagsterRun, ExecuteInProcessResult


class JobFailed(RuntimeError):
    """A job run failed; the message is the failing op's error."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


def dagster_home() -> Path:
    """DAGSTER_HOME; by default the working folder if it has dagster.yaml, else .htd/dagster
    (given a dagster.yaml of its own the first time: local storage, no telemetry)."""
    if not os.environ.get("DAGSTER_HOME"):
        cwd = Path.cwd()
        home = cwd if (cwd / "dagster.yaml").exists() else settings.htd_home() / "dagster"
        os.environ["DAGSTER_HOME"] = str(home)
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            config.write_text(
                "# written by htd-pipelines: the local default instance\n"
                "telemetry:\n  enabled: false\n"
            )
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    return home


def get_instance() -> DagsterInstance:
    dagster_home()
    from dagster import DagsterInstance

    return DagsterInstance.get()


def failure_message(result: ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            error = event.step_failure_data.error
            while (
                error is not None
                and error.cause is not None
                and "Error occurred while" in (error.message or "")
            ):
                error = error.cause
            return f"{event.step_key}: {(error.message if error else '').strip()}"
    return "the run failed"


def run_job(
    job_name: str,
    run_config: dict,
    *,
    tags: dict[str, str] | None = None,
    instance: DagsterInstance | None = None,
    verbose: bool = False,
) -> ExecuteInProcessResult:
    if not verbose and "loggers" not in run_config:
        # the CLI prints its own summary: Dagster's DEBUG events (~100 lines a run) reach
        # stderr only on request (-v); warnings and errors always; the run storage keeps all
        run_config = {**run_config, "loggers": {"console": {"config": {"log_level": "WARNING"}}}}

    # built now, not at import: the environment (HTD_*) of this call decides the resources
    from htd_pipelines.definitions import build_definitions

    job = build_definitions().resolve_job_def(job_name)
    owns = instance is None
    instance = instance or get_instance()
    try:
        result = job.execute_in_process(
            run_config=run_config, instance=instance, tags=tags or {}, raise_on_error=False
        )
        if not result.success:
            message = failure_message(result)
            # the run-failure sensor watches runs launched through the daemon or the UI; a run
            # executed here is alerted here (same alert, same webhook)
            alert_failed_run(instance.get_run_by_id(result.run_id) or result.dagster_run, message)
            raise JobFailed(message, result.run_id)
    finally:
        if owns:
            instance.dispose()
    return result


def alert_failed_run(run: DagsterRun, message: str) -> None:
    """The run-failure sensor's alert for a run of the code location's (the sensor watches
    every job: a run launched here is always one of them)."""
    from htd_pipelines.resources.alerts import send_alert
    from htd_pipelines.sensors.alerts import alert_for_failed_run

    alert = alert_for_failed_run(run, message)
    send_alert(alert, settings.alert_webhook_url(), logging.getLogger("htd_pipelines"))


def check_database() -> None:
    """Connect to the application database once; raises the driver's error (named by `main`
    in one line) before a job starts, instead of a failed run logging its traceback."""
    with get_engine(settings.database_url()).connect():
        pass


def run_cli_job(
    args: argparse.Namespace, job_name: str, run_config: dict, **kw: object
) -> ExecuteInProcessResult:
    """`run_job` for a CLI command: the database checked first; Dagster's DEBUG events on
    stderr only with the global -v/--verbose."""
    check_database()
    return run_job(job_name, run_config, verbose=getattr(args, "verbose", False), **kw)
