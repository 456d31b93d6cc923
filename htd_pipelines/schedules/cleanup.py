"""The test_session_cleanup schedule."""

import os

from dagster import RunRequest, ScheduleEvaluationContext, schedule

from htd_pipelines.schedules.guards import running_skip

CRON = os.environ.get("HTD_CLEANUP_CRON", "0 3 * * *")
TIMEZONE = os.environ.get("HTD_CLEANUP_TIMEZONE", "Asia/Shanghai")


@schedule(
    job_name="test_session_cleanup_job",
    cron_schedule=CRON,
    execution_timezone=TIMEZONE,
    description="Daily removal of test sessions older than HTD_TEST_SESSION_MAX_AGE_DAYS "
    "(default 7), backed up first, in bounded batches; skipped while the job still runs. "
    "Replaces the legacy crontab row clearTestSessions.",
)
def test_session_cleanup(context: ScheduleEvaluationContext):
    skip = running_skip(context, "test_session_cleanup_job")
    if skip:
        return skip
    days = float(os.environ.get("HTD_TEST_SESSION_MAX_AGE_DAYS", "7"))
    return RunRequest(
        run_key=None,
        run_config={"ops": {"clean_test_sessions": {"config": {"older_than_days": days}}}},
        tags={"htd/schedule": "test_session_cleanup"},
    )
