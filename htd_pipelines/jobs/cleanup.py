"""test_session_cleanup_job: remove old test sessions (replaces clearTestSessions)."""

import datetime as dt

from dagster import Config, OpExecutionContext, in_process_executor, job, op
from pydantic import Field

from htd_pipelines.cleanup import clean_test_sessions
from htd_pipelines.resources import AppDatabase, RelationRegistry, SnapshotStorage


class CleanupConfig(Config):
    type: str = Field(default="inst", description="Backup type whose test sessions to remove")
    older_than_days: float = Field(default=7, description="Only test sessions older than this")
    batch_size: int = Field(default=100, description="Sessions per batch (one transaction)")
    max_batches: int = Field(default=10, description="Batches per run at most (bounded work)")
    backup_first: bool = Field(
        default=True, description="Back the sessions up before deleting them (recommended)"
    )
    uid: str | None = Field(default="test_session_cleanup", description="Recorded as who")


@op(
    name="clean_test_sessions",
    description="Find test sessions (registry lifecycle test_flag) older than older_than_days "
    "and remove them with all their related rows in bounded batches, children first; backed "
    "up first unless backup_first is false.",
)
def clean_test_sessions_op(
    context: OpExecutionContext,
    config: CleanupConfig,
    database: AppDatabase,
    relations: RelationRegistry,
    snapshots: SnapshotStorage,
) -> dict:
    result = clean_test_sessions(
        database.engine(),
        relations.load(),
        snapshots.store(),
        type_name=config.type,
        older_than=dt.timedelta(days=config.older_than_days),
        batch_size=config.batch_size,
        max_batches=config.max_batches,
        backup_first=config.backup_first,
        uid=config.uid,
        run_id=context.run_id,
    )
    context.log.info(
        f"removed {result['sessions']} test sessions ({result['rows']} rows) "
        f"in {result['batches']} batches"
    )
    context.add_output_metadata({k: v for k, v in result.items() if k != "backup_ids"})
    return result


@job(
    description="Remove old test sessions through the relation registry, in bounded batches "
    "(replaces the legacy crontab's clearTestSessions).",
    tags={"htd/job": "cleanup"},
    executor_def=in_process_executor,
)
def test_session_cleanup_job() -> None:
    clean_test_sessions_op()
