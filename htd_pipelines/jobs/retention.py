"""retention_job: prune backup versions outside each type's retention policy."""

from dagster import Config, OpExecutionContext, in_process_executor, job, op
from pydantic import Field

from htd_pipelines.resources import AppDatabase, RelationRegistry
from htd_pipelines.retention import plan_prune, prune


class RetentionConfig(Config):
    type: str | None = Field(default=None, description="Only this backup type (default: all)")
    dry_run: bool = Field(default=False, description="Report what would go; remove nothing")
    uid: str | None = Field(default="retention_job", description="Recorded as who")


@op(
    description="Decide per backup (keep_last / keep_days; never the newest verified one, nor "
    "a never-restored one unless allowed), then remove the pruned versions' files and "
    "catalog rows; safe to interrupt and re-run.",
)
def prune_backups(
    context: OpExecutionContext,
    config: RetentionConfig,
    database: AppDatabase,
    relations: RelationRegistry,
) -> list:
    decisions = plan_prune(database.engine(), relations.load(), config.type)
    going = [d for d in decisions if d.prune]
    for d in going:
        context.log.info(f"prune backup {d.backup_id} ({d.type} {d.relation_id} v{d.version})")
    pruned = (
        []
        if config.dry_run
        else prune(database.engine(), decisions, uid=config.uid, run_id=context.run_id)
    )
    context.add_output_metadata(
        {
            "would_prune" if config.dry_run else "pruned": len(going),
            "kept": len(decisions) - len(going),
        }
    )
    return [d.as_dict() for d in decisions] if config.dry_run else pruned


@job(
    description="Apply the retention policy of each backup type (registry `retention:`).",
    tags={"htd/job": "retention"},
    executor_def=in_process_executor,
)
def retention_job() -> None:
    prune_backups()
