"""data_table_partitions_sensor: one data_table_backup partition per data table."""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from htd_pipelines import settings
from htd_pipelines.assets.data_tables import data_tables
from htd_pipelines.registry.resolved import resolve_type
from htd_pipelines.resources import AppDatabase, RelationRegistry


@sensor(
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.STOPPED,
    description="Adds a data_tables partition for every data table key found in the "
    "application database (the dataset type's root key).",
)
def data_table_partitions_sensor(
    context: SensorEvaluationContext, database: AppDatabase, relations: RelationRegistry
) -> SensorResult:
    engine = database.engine()
    rtype = resolve_type(engine, relations.load().get(settings.dataset_type()))
    key = rtype.root.table.c[rtype.root.rule.key]
    import sqlalchemy as sa

    with engine.connect() as conn:
        keys = {str(k) for k in conn.execute(sa.select(key).distinct()).scalars() if k is not None}
    known = set(context.instance.get_dynamic_partitions(data_tables.name))
    new = sorted(keys - known)
    if not new:
        return SensorResult(skip_reason=SkipReason("no new data tables"))
    return SensorResult(dynamic_partitions_requests=[data_tables.build_add_request(new)])
