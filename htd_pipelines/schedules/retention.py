"""The retention schedule."""

from htd_pipelines import settings
from htd_pipelines.schedules.guards import guarded_schedule

retention_schedule = guarded_schedule(
    name="retention_schedule",
    job_name="retention_job",
    cron=settings.RETENTION_CRON,
    timezone=settings.RETENTION_TIMEZONE,
    description="Weekly pruning of backup versions outside each type's retention policy; "
    "skipped while the job still runs.",
)
