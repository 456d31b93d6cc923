"""data_table_backup_schedule: a new backup of every data table, skipped while one runs."""

from dagster import RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from htd_pipelines import settings
from htd_pipelines.assets.data_tables import data_tables
from htd_pipelines.jobs.data_tables import data_table_backup_job
from htd_pipelines.schedules.guards import running_skip


@schedule(
    job=data_table_backup_job,
    cron_schedule=settings.DATA_TABLE_CRON.value(),
    execution_timezone=settings.DATA_TABLE_TIMEZONE.value(),
    description="Daily backup of every data table partition (one run each); a tick is skipped, "
    "with the reason, while a run of data_table_backup_job is still queued or running.",
)
def data_table_backup_schedule(
    context: ScheduleEvaluationContext,
) -> SkipReason | list[RunRequest]:
    skip = running_skip(context, data_table_backup_job.name)
    if skip:
        return skip
    keys = context.instance.get_dynamic_partitions(data_tables.name)
    if not keys:
        return SkipReason("no data table partitions yet (see data_table_partitions_sensor)")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [
        RunRequest(
            run_key=f"{key}:{day}",
            partition_key=key,
            tags={"htd/schedule": "data_table_backup_schedule"},
        )
        for key in keys
    ]
