"""The `backup_catalog` asset: the `back_up` table, materialized by every backup and restore."""

from __future__ import annotations

from dagster import AssetKey, AssetMaterialization, AssetSpec, MetadataValue

from htd_pipelines.backup import RecordedBackup
from htd_pipelines.registry.relation_ids import tag_value
from htd_pipelines.restore import RestoreResult

BACKUP_CATALOG = AssetKey("backup_catalog")

backup_catalog = AssetSpec(
    key=BACKUP_CATALOG,
    description=(
        "The backup catalog: one row per backup version in the application database's "
        "`back_up` table (type, relation id, version, manifest, is_reback), with the Parquet "
        "snapshots under HTD_SNAPSHOT_URI. Materialized by backup_job and restore_job."
    ),
    group_name="htd",
    kinds={"parquet", "sql"},
)


def backup_materialization(
    recorded: RecordedBackup, type_name: str, uid: str | None, run_uri: str
) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=BACKUP_CATALOG,
        description=f"backup {recorded.backup_id}: {type_name} {recorded.relation_id} "
        f"v{recorded.version}",
        metadata={
            "backup_id": recorded.backup_id,
            "type": type_name,
            "relation_id": recorded.relation_id,
            "version": recorded.version,
            "uid": uid or "",
            "total_rows": sum(recorded.rows.values()),
            "bytes": MetadataValue.int(recorded.bytes),
            "rows_per_table": MetadataValue.md(
                "| table | rows |\n|---|---|\n"
                + "\n".join(f"| {t} | {n} |" for t, n in recorded.rows.items())
            ),
            "location": MetadataValue.path(f"{run_uri.rstrip('/')}/{recorded.location}"),
            "is_reback": 0,
        },
        # asset event tags are checked strictly (63 characters of [A-Za-z0-9_.-]): the id is
        # rendered, or a session like bob@example.com would fail its run after the commit
        tags={"htd/type": type_name, "htd/relation_id": tag_value(recorded.relation_id)},
    )


def restore_materialization(
    result: RestoreResult, uid: str | None, run_id: str
) -> AssetMaterialization:
    return AssetMaterialization(
        asset_key=BACKUP_CATALOG,
        description=f"backup {result.backup_id} restored ({result.relation_id})",
        metadata={
            "backup_id": result.backup_id,
            "relation_id": result.relation_id,
            "is_reback": 1,
            "restored_by": uid or "",
            "restore_run_id": run_id,
            "total_rows": sum(result.rows.values()),
            "rows_per_table": MetadataValue.md(
                "| table | rows |\n|---|---|\n"
                + "\n".join(f"| {t} | {n} |" for t, n in result.rows.items())
            ),
        },
        tags={"htd/relation_id": tag_value(result.relation_id)},
    )
