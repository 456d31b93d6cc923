"""data_table_backup_job: materializes data_table_backup partitions (one per data table)."""

from dagster import define_asset_job

from htd_pipelines.assets.data_tables import data_table_backup

data_table_backup_job = define_asset_job(
    name="data_table_backup_job",
    selection=[data_table_backup],
    description="Back up data tables (one run per data table partition).",
    tags={"htd/job": "data_table_backup"},
)
