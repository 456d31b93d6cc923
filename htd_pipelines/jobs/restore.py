"""restore_job: check the backup (files, schema, catalog state) -> restore its rows in one
transaction. With dry_run the check reports what would happen and nothing is written."""

import os
from dataclasses import dataclass

import sqlalchemy as sa
from dagster import Config, Failure, In, OpExecutionContext, in_process_executor, job, op
from pydantic import Field

from htd_pipelines import restore
from htd_pipelines.assets.catalog import restore_materialization
from htd_pipelines.assets.run_tags import add_missing_run_tags
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.jobs.run_config import SESSION_TAG, session_tag
from htd_pipelines.registry.relation_ids import tag_value
from htd_pipelines.resources import AppDatabase, RelationRegistry, SnapshotStorage
from htd_pipelines.store import catalog


class RestoreConfig(Config):
    backup_id: int = Field(description="Catalog id (back_up.id) of the backup to restore")
    uid: str | None = Field(default=None, description="Who restores (audit)")
    dry_run: bool = Field(
        default=False, description="Preview only: rows, key conflicts, missing parents, files"
    )
    target: str | None = Field(
        default=None,
        description="SQLAlchemy URL of another database to restore into (a staging copy); "
        "the catalog is not claimed. No passwords here: use target_env",
    )
    target_env: str | None = Field(
        default=None, description="Name of an environment variable holding the target URL"
    )


@dataclass(frozen=True)
class RestoreOrder:
    """What check_backup hands to restore_rows (no secrets: target_env is a variable name)."""

    backup_id: int
    uid: str | None
    target: str | None
    target_env: str | None
    go: bool


def target_url(config: RestoreConfig | RestoreOrder) -> str | None:
    if config.target_env:
        url = os.environ.get(config.target_env)
        if not url:
            raise Failure(f"environment variable {config.target_env} (target_env) is not set")
        return url
    if config.target:
        from sqlalchemy.engine import make_url

        if make_url(config.target).password:
            raise Failure(
                "target URL contains a password: put the URL in an environment variable and "
                "name it in target_env (secrets never go in run config)"
            )
    return config.target


def restore_tags(engine: sa.Engine, backup_id: int, uid: str | None) -> dict[str, str | None]:
    """htd/backup_id and htd/uid, with htd/type and htd/relation_id from the catalog (as
    restore_request_sensor tags its runs); without them when the backup is not in the catalog
    (check_backup then refuses the restore and says why)."""
    tags: dict[str, str | None] = {"htd/backup_id": str(backup_id), "htd/uid": uid}
    try:
        catalog.ensure_catalog(engine)
        with engine.connect() as conn:
            record = catalog.get_backup(conn, backup_id)
    except catalog.CatalogError:
        return tags
    return {
        "htd/type": record.type,
        "htd/relation_id": tag_value(record.relation_id),
        SESSION_TAG: session_tag(record.type, record.relation_id),
        **tags,
    }


@op(
    description="Tag the run (htd/backup_id, htd/type, htd/relation_id, htd/uid) where its "
    "launcher did not, then verify the backup before anything is written: catalog state "
    "(is_reback), every snapshot file against the manifest (exists, sha256, rows, columns), the "
    "registry and the live schema. With dry_run, also report rows per table, key conflicts and "
    "missing parents.",
)
def check_backup(
    context: OpExecutionContext,
    config: RestoreConfig,
    database: AppDatabase,
    relations: RelationRegistry,
) -> RestoreOrder:
    catalog_engine = database.engine()
    # first, so that a refused restore still names its backup, type and session
    add_missing_run_tags(context, restore_tags(catalog_engine, config.backup_id, config.uid))
    url = target_url(config)
    target = get_engine(url) if url else catalog_engine
    preview = restore.preview_restore(
        catalog_engine, target, relations.load(), config.backup_id, deep=config.dry_run
    )
    context.add_output_metadata({"preview": preview.as_dict()})
    for line in (preview.problems, preview.conflicts, preview.missing_parents):
        if line:
            context.log.warning(str(line))
    context.log.info(f"rows per table: {preview.rows}")
    if not preview.ok:
        if config.dry_run:
            context.log.warning(f"a restore of backup {config.backup_id} would be refused")
        else:
            raise Failure(
                f"restore of backup {config.backup_id} refused: "
                + "; ".join(
                    [*preview.problems]
                    + [f"key conflicts in {t}: {k}" for t, k in preview.conflicts.items()]
                    + [f"missing parents {fk}: {v}" for fk, v in preview.missing_parents.items()]
                ),
                metadata={"preview": preview.as_dict()},
            )
    return RestoreOrder(
        config.backup_id, config.uid, config.target, config.target_env, not config.dry_run
    )


@op(
    description="In one transaction: claim the backup (is_reback 0 -> 1, conditional), insert "
    "every table parents first, read the rows back and compare them with the snapshot value "
    "for value; anything off rolls everything back.",
    ins={"order": In(RestoreOrder)},
)
def restore_rows(
    context: OpExecutionContext,
    order: RestoreOrder,
    database: AppDatabase,
    relations: RelationRegistry,
    snapshots: SnapshotStorage,
) -> None:
    if not order.go:
        context.log.info("dry run: nothing written")
        return
    url = target_url(order)
    try:
        result = restore.restore_backup(
            database.engine(),
            relations.load(),
            order.backup_id,
            uid=order.uid,
            run_id=context.run_id,
            target_engine=get_engine(url) if url else None,
        )
    except (restore.RestoreRefused, restore.SnapshotError) as exc:
        raise Failure(str(exc)) from exc
    context.log.info(f"restored {sum(result.rows.values())} rows: {result.rows}")
    if result.corrected:
        context.log.warning(f"values put back after triggers/defaults: {result.corrected}")
    if result.claimed:
        context.log_event(restore_materialization(result, order.uid, context.run_id))


@job(
    description="Restore one backup (by catalog id): verified, all-or-nothing, at most once. "
    "Launched by restore_request_sensor for requested backups whose is_reback is 0.",
    tags={"htd/job": "restore"},
    executor_def=in_process_executor,
)
def restore_job() -> None:
    restore_rows(check_backup())
