"""The test_session_cleanup schedule (replaces the legacy crontab's clearTestSessions)."""

from htd_pipelines import settings
from htd_pipelines.schedules.guards import guarded_schedule


def _run_config() -> dict:
    days = settings.test_session_max_age_days()
    return {"ops": {"clean_test_sessions": {"config": {"older_than_days": days}}}}


test_session_cleanup = guarded_schedule(
    name="test_session_cleanup",
    job_name="test_session_cleanup_job",
    cron=settings.CLEANUP_CRON,
    timezone=settings.CLEANUP_TIMEZONE,
    description="Daily removal of test sessions older than HTD_TEST_SESSION_MAX_AGE_DAYS "
    "(default 7), backed up first, in bounded batches; skipped while the job still runs. "
    "Replaces the legacy crontab row clearTestSessions.",
    run_config=_run_config,
)
