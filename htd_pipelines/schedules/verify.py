"""The verify_backups schedule."""

import os

from dagster import RunRequest, ScheduleEvaluationContext, schedule

from htd_pipelines.schedules.guards import running_skip

CRON = os.environ.get("HTD_VERIFY_CRON", "0 4 * * *")
TIMEZONE = os.environ.get("HTD_VERIFY_TIMEZONE", "Asia/Shanghai")


@schedule(
    job_name="verify_backups_job",
    cron_schedule=CRON,
    execution_timezone=TIMEZONE,
    description="Daily verification of every backup that is due (new, changed, or not verified "
    "in the last 24 h); skipped while the job still runs.",
)
def verify_backups_schedule(context: ScheduleEvaluationContext):
    skip = running_skip(context, "verify_backups_job")
    if skip:
        return skip
    return RunRequest(tags={"htd/schedule": "verify_backups_schedule"})
