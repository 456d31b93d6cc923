"""verify_backups_job: runs the backup_catalog asset check snapshots_verified."""

from dagster import AssetSelection, define_asset_job

from htd_pipelines.assets.checks import snapshots_verified

VERIFY_OP = "backup_catalog_snapshots_verified"

verify_backups_job = define_asset_job(
    name="verify_backups_job",
    selection=AssetSelection.checks(snapshots_verified),
    description="Verify backups: re-read snapshots against their manifests (optionally a test "
    "restore into a scratch database) and record the outcome per backup.",
    tags={"htd/job": "verify"},
)
