"""The test_session_cleanup schedule (replaces the legacy crontab's clearTestSessions)."""

import os

from htd_pipelines.schedules.guards import guarded_schedule


def _run_config() -> dict:
    days = float(os.environ.get("HTD_TEST_SESSION_MAX_AGE_DAYS", "7"))
    return {"ops": {"clean_test_sessions": {"config": {"older_than_days": days}}}}


test_session_cleanup = guarded_schedule(
    name="test_session_cleanup",
    job_name="test_session_cleanup_job",
    cron_env="HTD_CLEANUP_CRON",
    default_cron="0 3 * * *",
    timezone_env="HTD_CLEANUP_TIMEZONE",
    description="Daily removal of test sessions older than HTD_TEST_SESSION_MAX_AGE_DAYS "
    "(default 7), backed up first, in bounded batches; skipped while the job still runs. "
    "Replaces the legacy crontab row clearTestSessions.",
    run_config=_run_config,
)
