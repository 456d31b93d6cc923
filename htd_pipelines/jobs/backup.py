"""backup_job: plan -> one extract op per registry table -> record_backup -> delete_source."""

from dagster import (
    Config,
    ExecutorDefinition,
    Failure,
    HookContext,
    In,
    JobDefinition,
    OpDefinition,
    OpExecutionContext,
    Out,
    failure_hook,
    graph,
    in_process_executor,
    op,
)
from pydantic import Field

from htd_pipelines import backup, delete
from htd_pipelines.assets.catalog import backup_materialization
from htd_pipelines.assets.run_tags import add_missing_run_tags
from htd_pipelines.backup import BackupPlan, RecordedBackup, TableExtract
from htd_pipelines.dialects import read
from htd_pipelines.jobs.run_config import backup_tags
from htd_pipelines.registry.spec import Registry, TableRule
from htd_pipelines.resources import AppDatabase, RelationRegistry, SnapshotStorage
from htd_pipelines.settings import marker_max_attempts
from htd_pipelines.store import session_claims


class BackupConfig(Config):
    type: str = Field(description="Backup type from the relation registry, e.g. inst")
    relation_ids: list[str] = Field(
        description="Root keys (session ids) to back up; several make one batch"
    )
    uid: str | None = Field(default=None, description="Who asks for the backup (audit)")
    keep_source: bool = Field(
        default=False, description="Keep the source rows (do not delete after the backup)"
    )
    from_markers: bool = Field(
        default=False,
        description="Launched for deletion markers: claim each session's marker first and "
        "leave out (and report) sessions that are gone or already handled",
    )


@op(
    description="Tag the run (htd/type, htd/relation_id(s), htd/uid) where its launcher did not, "
    "validate the registry against the live schema, check that every relation id exists, and "
    "reserve a new snapshot version per session.",
    out=Out(BackupPlan),
)
def plan_backup(
    context: OpExecutionContext,
    config: BackupConfig,
    database: AppDatabase,
    relations: RelationRegistry,
    snapshots: SnapshotStorage,
) -> BackupPlan:
    # first, so that a run refused below still names its type and sessions
    add_missing_run_tags(context, backup_tags(config.type, config.relation_ids, config.uid))
    plan = backup.plan_backup(
        database.engine(),
        relations.load(),
        snapshots.store(),
        type_name=config.type,
        relation_ids=config.relation_ids,
        uid=config.uid,
        keep_source=config.keep_source,
        run_id=context.run_id,
        from_markers=config.from_markers,
        run_status=lambda run_id: _run_status(context, run_id),
        max_attempts=marker_max_attempts(),
    )
    for rid, reason in [*plan.skipped, *plan.problems]:
        context.log.warning(f"session {rid} left out: {reason}")
    context.log.info(
        f"backing up {plan.type} {', '.join(plan.relation_ids)} as versions {plan.versions}"
    )
    return plan


def _run_status(context: OpExecutionContext, run_id: str) -> str | None:
    run = context.instance.get_run_by_id(run_id)
    return run.status.value if run is not None else None


def extract_op(table: str, rules: list[TableRule]) -> OpDefinition:
    slug = rules[0].slug
    keys = ", ".join(sorted({f"{r.key}" for r in rules}))

    @op(
        name=f"extract_{slug}",
        description=f"Stream the sessions' rows of `{table}` (keyed by {keys}) into one zstd "
        "Parquet snapshot per session, with sha256, row count and primary-key digest.",
        ins={"plan": In(BackupPlan)},
        out=Out(TableExtract),
        tags={"htd/table": table},
    )
    def _extract(
        context: OpExecutionContext,
        plan: BackupPlan,
        database: AppDatabase,
        relations: RelationRegistry,
        snapshots: SnapshotStorage,
    ) -> TableExtract:
        result = backup.extract_table(
            database.engine(), relations.load(), snapshots.store(), plan, table
        )
        if result.per_relation:
            context.log.info(f"{table}: {result.rows} rows")
        else:
            context.log.info(f"{table} is not part of type {plan.type}; nothing to extract")
        return result

    return _extract


@op(
    description="Write each session's manifest and its row in the back_up catalog "
    "(is_reback = 0), and materialize the backup_catalog asset.",
    ins={"plan": In(BackupPlan), "extracts": In(list[TableExtract])},
    out=Out(list[RecordedBackup]),
)
def record_backup(
    context: OpExecutionContext,
    plan: BackupPlan,
    extracts: list[TableExtract],
    database: AppDatabase,
    relations: RelationRegistry,
    snapshots: SnapshotStorage,
) -> list[RecordedBackup]:
    recorded = backup.record_backup(
        database.engine(), relations.load(), snapshots.store(), plan, extracts
    )
    for r in recorded:
        context.log_event(backup_materialization(r, plan.type, plan.uid, snapshots.uri))
    return recorded


@op(
    description="Unless keep_source: verify the snapshot files, then delete the captured rows "
    "in one transaction, children first, only if the rows deleted are exactly the rows captured.",
    ins={"plan": In(BackupPlan), "recorded": In(list[RecordedBackup])},
)
def delete_source(
    context: OpExecutionContext,
    plan: BackupPlan,
    recorded: list[RecordedBackup],
    database: AppDatabase,
    relations: RelationRegistry,
    snapshots: SnapshotStorage,
) -> None:
    try:
        if plan.keep_source:
            context.log.info("keep_source is set: source rows are kept")
        else:
            counts = delete.delete_source(
                database.engine(), relations.load(), snapshots.store(), plan, recorded
            )
            context.log.info(f"deleted {sum(counts.values())} rows: {counts}")
    finally:
        backup.release_sessions(database.engine(), plan)
    if plan.problems:
        raise Failure(
            f"{len(plan.problems)} marked session(s) could not be backed up: "
            + "; ".join(f"{rid}: {reason}" for rid, reason in plan.problems)
            + (f" ({len(recorded)} other session(s) were backed up)" if recorded else "")
        )


@failure_hook(required_resource_keys={"database"})
def release_on_failure(context: HookContext) -> None:
    """A step failed: the run's read snapshot is closed and its session claims released at
    once (the next run need not wait for the claims to go stale)."""
    read.close_snapshot(context.run_id)
    session_claims.release_run(context.resources.database.engine(), context.run_id)


def build_backup_job(
    registry: Registry, executor_def: ExecutorDefinition = in_process_executor
) -> JobDefinition:
    """One extract op per table named in the registry (any type), composed into one graph.

    In-process by default: per-op process start-up, not the database, dominates small
    sessions; batch sessions per run rather than spreading one run over processes.
    """
    rules: dict[str, list[TableRule]] = {}
    for btype in registry.types.values():
        for rule in btype.all_tables:
            rules.setdefault(rule.table, []).append(rule)
    extract_ops = [extract_op(table, rs) for table, rs in rules.items()]

    @graph(
        name="backup_job",
        description="Back up sessions: extract every related table to Parquet, record the "
        "backup in the catalog, then delete the captured source rows (unless keep_source).",
    )
    def backup_graph() -> None:
        plan = plan_backup()
        extracts = [extract(plan) for extract in extract_ops]
        recorded = record_backup(plan, extracts)
        delete_source(plan, recorded)

    return backup_graph.to_job(
        executor_def=executor_def,
        tags={"htd/job": "backup"},
        hooks={release_on_failure},
    )
