"""The verify_backups schedule."""

from htd_pipelines.schedules.guards import guarded_schedule

verify_backups_schedule = guarded_schedule(
    name="verify_backups_schedule",
    job_name="verify_backups_job",
    cron_env="HTD_VERIFY_CRON",
    default_cron="0 4 * * *",
    timezone_env="HTD_VERIFY_TIMEZONE",
    description="Daily verification of every backup that is due (new, changed, or not verified "
    "in the last 24 h); skipped while the job still runs.",
)
