"""The retention schedule."""

import os

from dagster import RunRequest, ScheduleEvaluationContext, schedule

from htd_pipelines.schedules.guards import running_skip

CRON = os.environ.get("HTD_RETENTION_CRON", "30 4 * * 0")
TIMEZONE = os.environ.get("HTD_RETENTION_TIMEZONE", "Asia/Shanghai")


@schedule(
    job_name="retention_job",
    cron_schedule=CRON,
    execution_timezone=TIMEZONE,
    description="Weekly pruning of backup versions outside each type's retention policy; "
    "skipped while the job still runs.",
)
def retention_schedule(context: ScheduleEvaluationContext):
    skip = running_skip(context, "retention_job")
    if skip:
        return skip
    return RunRequest(tags={"htd/schedule": "retention_schedule"})
