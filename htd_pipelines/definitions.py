"""The code location: every job, asset, sensor, schedule and resource, assembled in one place.

Loading needs no database: the registry YAML is parsed (not checked against the live schema)
to generate one extract op per table; ops validate against the live schema when they run.
"""

from __future__ import annotations

from dagster import Definitions, EnvVar, JobDefinition, definitions

from htd_pipelines import settings
from htd_pipelines.assets.catalog import backup_catalog
from htd_pipelines.assets.checks import snapshots_verified
from htd_pipelines.assets.data_tables import data_table_backup
from htd_pipelines.jobs.backup import build_backup_job
from htd_pipelines.jobs.cleanup import test_session_cleanup_job
from htd_pipelines.jobs.data_tables import data_table_backup_job
from htd_pipelines.jobs.incremental import protective_backup_job, restore_version_job
from htd_pipelines.jobs.restore import restore_job
from htd_pipelines.jobs.retention import retention_job
from htd_pipelines.jobs.verify import verify_backups_job
from htd_pipelines.registry.spec import Registry, load_registry
from htd_pipelines.resources import AppDatabase, RelationRegistry, SnapshotStorage
from htd_pipelines.resources.alerts import AlertSink
from htd_pipelines.schedules.cleanup import test_session_cleanup
from htd_pipelines.schedules.data_tables import data_table_backup_schedule
from htd_pipelines.schedules.declared import load_declared_schedules, schedules_file
from htd_pipelines.schedules.incremental import protective_backup_schedule
from htd_pipelines.schedules.retention import retention_schedule
from htd_pipelines.schedules.verify import verify_backups_schedule
from htd_pipelines.sensors.alerts import alert_sensors
from htd_pipelines.sensors.data_tables import data_table_partitions_sensor
from htd_pipelines.sensors.deletion_marker import deletion_marker_sensor
from htd_pipelines.sensors.restore_request import restore_request_sensor


def _env_or_default(variable: settings.Variable, default: str | None) -> str | EnvVar | None:
    """Read the variable at run time (EnvVar) when it is set; otherwise the embedded default."""
    return EnvVar(variable.name) if variable.is_set() else default


def build_resources() -> dict:
    return {
        "database": AppDatabase(
            url=_env_or_default(settings.DATABASE_URL, settings.default_database_url())
        ),
        "relations": RelationRegistry(
            path=_env_or_default(settings.RELATIONS_FILE, str(settings.DEMO_RELATIONS_FILE))
        ),
        "snapshots": SnapshotStorage(
            uri=_env_or_default(settings.SNAPSHOT_URI, settings.default_snapshot_uri())
        ),
        "alerts": AlertSink(webhook_url=_env_or_default(settings.ALERT_WEBHOOK_URL, None)),
    }


def build_jobs(registry: Registry) -> list[JobDefinition]:
    """Every job of the code location: the one list (sensors, schedules and the CLI take the
    names from here)."""
    return [
        build_backup_job(registry),
        restore_job,
        test_session_cleanup_job,
        verify_backups_job,
        retention_job,
        data_table_backup_job,
        protective_backup_job,
        restore_version_job,
    ]


def job_names() -> set[str]:
    """Names of the code location's jobs (the declared schedules are not loaded for this)."""
    return {j.name for j in build_jobs(load_registry(settings.relations_file()))}


def build_definitions() -> Definitions:
    registry = load_registry(settings.relations_file())
    jobs = build_jobs(registry)
    return Definitions(
        assets=[backup_catalog, data_table_backup],
        asset_checks=[snapshots_verified],
        jobs=jobs,
        sensors=[
            deletion_marker_sensor,
            restore_request_sensor,
            data_table_partitions_sensor,
            *alert_sensors(jobs),
        ],
        schedules=[
            test_session_cleanup,
            verify_backups_schedule,
            retention_schedule,
            data_table_backup_schedule,
            protective_backup_schedule,
            *load_declared_schedules(schedules_file(), {j.name for j in jobs}),
        ],
        resources=build_resources(),
    )


@definitions
def defs() -> Definitions:
    """The code location, built when Dagster loads it (importing this module builds nothing)."""
    return build_definitions()
