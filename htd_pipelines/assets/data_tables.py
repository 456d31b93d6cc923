"""data_table_backup: one data table's rows (a dataset), one dynamic partition per data table
(the original DataTableBackupModel). Backed up through the registry type HTD_DATASET_TYPE
(default `dataset`, whose relation_id is the data table's key), restorable with restore_job."""


from dagster import (
    AssetExecutionContext,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    schedule,
    sensor,
)

from htd_pipelines import settings
from htd_pipelines.backup import backup_sessions
from htd_pipelines.jobs.tags import add_missing_run_tags
from htd_pipelines.registry.resolved import resolve_type
from htd_pipelines.resources import AppDatabase, RelationRegistry, SnapshotStorage
from htd_pipelines.schedules.guards import running_skip

data_tables = DynamicPartitionsDefinition(name="data_tables")


def dataset_type() -> str:
    return settings.dataset_type()


@asset(
    key="data_table_backup",
    partitions_def=data_tables,
    group_name="htd",
    kinds={"parquet"},
    description="A versioned Parquet backup of one data table's rows (partition = the data "
    "table's key), kept in the backup catalog like session backups; the source rows stay.",
)
def data_table_backup(
    context: AssetExecutionContext,
    database: AppDatabase,
    relations: RelationRegistry,
    snapshots: SnapshotStorage,
) -> MaterializeResult:
    # runs of data_table_backup_job, or of the asset graph's own job: filterable like sessions
    add_missing_run_tags(
        context, {"htd/type": dataset_type(), "htd/relation_id": context.partition_key}
    )
    [recorded] = backup_sessions(
        database.engine(),
        relations.load(),
        snapshots.store(),
        type_name=dataset_type(),
        relation_ids=[context.partition_key],
        uid="data_table_backup",
        run_id=context.run.run_id,
        keep_source=True,
    )
    return MaterializeResult(
        metadata={
            "backup_id": recorded.backup_id,
            "version": recorded.version,
            "rows": sum(recorded.rows.values()),
            "bytes": MetadataValue.int(recorded.bytes),
            "location": recorded.location,
        }
    )


data_table_backup_job = define_asset_job(
    name="data_table_backup_job",
    selection=[data_table_backup],
    description="Back up data tables (one run per data table partition).",
    tags={"htd/job": "data_table_backup"},
)


@sensor(
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description="Adds a data_tables partition for every data table key found in the "
    "application database (the dataset type's root key).",
)
def data_table_partitions_sensor(
    context: SensorEvaluationContext, database: AppDatabase, relations: RelationRegistry
):
    engine = database.engine()
    rtype = resolve_type(engine, relations.load().get(dataset_type()))
    key = rtype.root.table.c[rtype.root.rule.key]
    import sqlalchemy as sa

    with engine.connect() as conn:
        keys = {str(k) for k in conn.execute(sa.select(key).distinct()).scalars() if k is not None}
    known = set(context.instance.get_dynamic_partitions(data_tables.name))
    new = sorted(keys - known)
    if not new:
        return SensorResult(skip_reason=SkipReason("no new data tables"))
    return SensorResult(dynamic_partitions_requests=[data_tables.build_add_request(new)])


@schedule(
    job=data_table_backup_job,
    cron_schedule=settings.DATA_TABLE_CRON.text() or "",
    execution_timezone=settings.DATA_TABLE_TIMEZONE.text() or settings.DEFAULT_TIMEZONE,
    description="Daily backup of every data table partition (one run each); a tick is skipped, "
    "with the reason, while a run of data_table_backup_job is still queued or running.",
)
def data_table_backup_schedule(context: ScheduleEvaluationContext):
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
