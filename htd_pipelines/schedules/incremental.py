"""The protective_backup schedule: incremental versions of the sessions that changed."""

from dagster import RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from htd_pipelines import settings
from htd_pipelines.jobs.incremental import protective_run_config
from htd_pipelines.schedules.guards import running_skip


@schedule(
    job_name="protective_backup_job",
    cron_schedule=settings.PROTECTIVE_CRON.value(),
    execution_timezone=settings.PROTECTIVE_TIMEZONE.value(),
    description="Daily protective versions of live sessions (type HTD_PROTECTIVE_TYPE, default "
    "inst): a new version of each session changed since its last one, at most "
    "HTD_PROTECTIVE_MAX_SESSIONS (default 100) per run; skipped while the job still runs.",
)
def protective_backup_schedule(context: ScheduleEvaluationContext) -> SkipReason | RunRequest:
    skip = running_skip(context, "protective_backup_job")
    if skip:
        return skip
    type_name = settings.protective_type()
    max_sessions = settings.protective_max_sessions()
    return RunRequest(
        run_config=protective_run_config(type_name, [], "protective_backup_schedule", max_sessions),
        tags={"htd/schedule": "protective_backup_schedule", "htd/type": type_name},
    )
