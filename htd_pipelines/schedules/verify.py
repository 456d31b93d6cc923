"""The verify_backups schedule."""

from htd_pipelines import settings
from htd_pipelines.schedules.guards import guarded_schedule

verify_backups_schedule = guarded_schedule(
    name="verify_backups_schedule",
    job_name="verify_backups_job",
    cron=settings.VERIFY_CRON,
    timezone=settings.VERIFY_TIMEZONE,
    description="Daily verification of every backup that is due (new, changed, or not verified "
    "in the last 24 h); skipped while the job still runs.",
)
