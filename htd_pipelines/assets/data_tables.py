"""data_table_backup: one data table's rows (a dataset), one dynamic partition per data table
(the original DataTableBackupModel). Backed up through the registry type HTD_DATASET_TYPE
(default `dataset`, whose relation_id is the data table's key), restorable with restore_job."""

from dagster import (
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from htd_pipelines import settings
from htd_pipelines.assets.run_tags import add_missing_run_tags
from htd_pipelines.delete import backup_sessions
from htd_pipelines.registry.relation_ids import tag_value
from htd_pipelines.resources import AppDatabase, RelationRegistry, SnapshotStorage

data_tables = DynamicPartitionsDefinition(name="data_tables")


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
        context,
        {"htd/type": settings.dataset_type(), "htd/relation_id": tag_value(context.partition_key)},
    )
    [recorded] = backup_sessions(
        database.engine(),
        relations.load(),
        snapshots.store(),
        type_name=settings.dataset_type(),
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
