"""The retention schedule."""

from htd_pipelines.schedules.guards import guarded_schedule

retention_schedule = guarded_schedule(
    name="retention_schedule",
    job_name="retention_job",
    cron_env="HTD_RETENTION_CRON",
    default_cron="30 4 * * 0",
    timezone_env="HTD_RETENTION_TIMEZONE",
    description="Weekly pruning of backup versions outside each type's retention policy; "
    "skipped while the job still runs.",
)
