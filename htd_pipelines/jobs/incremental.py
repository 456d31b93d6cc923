"""protective_backup_job (incremental versions of live sessions) and restore_version_job (put a
live session back to a recorded version). The work is in `htd_pipelines.versions`."""

from dagster import Config, Failure, MetadataValue, OpExecutionContext, in_process_executor, job, op
from pydantic import Field

from htd_pipelines import settings
from htd_pipelines.assets.catalog import backup_materialization
from htd_pipelines.assets.run_tags import add_missing_run_tags
from htd_pipelines.backup import BackupError, RecordedBackup
from htd_pipelines.jobs.run_config import backup_tags
from htd_pipelines.registry.relation_ids import tag_value
from htd_pipelines.registry.spec import RegistryError
from htd_pipelines.resources import AppDatabase, RelationRegistry, SnapshotStorage
from htd_pipelines.restore import RestoreRefused
from htd_pipelines.store.snapshots import SnapshotError
from htd_pipelines.versions.chain import INCREMENTAL
from htd_pipelines.versions.protective import (
    DEFAULT_MAX_CHAIN,
    DEFAULT_MAX_SESSIONS,
    VersionOutcome,
    protective_backup,
)
from htd_pipelines.versions.restore import restore_version

PROTECTIVE_OP = "protective_backup"
RESTORE_VERSION_OP = "restore_version"


class ProtectiveBackupConfig(Config):
    type: str = Field(description="Backup type from the relation registry, e.g. inst")
    relation_ids: list[str] = Field(
        default_factory=list,
        description="Sessions to version; empty: every session of the type changed since its "
        "last version (or never versioned), test sessions left out, at most max_sessions",
    )
    uid: str | None = Field(default=None, description="Who asks for the versions (audit)")
    max_sessions: int = Field(
        default=DEFAULT_MAX_SESSIONS,
        description="With empty relation_ids: new versions per run at most",
    )
    max_chain: int = Field(
        default=DEFAULT_MAX_CHAIN,
        description="Incremental versions on top of one full version at most; then a full one",
    )
    change_column: str | None = Field(
        default=None,
        description="Change-tracking column (e.g. updated_at) compared by max() on the tables "
        "that have it; default: HTD_CHANGE_COLUMN (unset: row digests everywhere)",
    )
    differential: bool = Field(
        default=False,
        description="Differential versions (every change since the full version, on top of "
        "it) instead of incremental ones (the changes since the previous version)",
    )


def _recorded(o: VersionOutcome) -> RecordedBackup:
    return RecordedBackup(
        backup_id=o.backup_id,
        relation_id=o.relation_id,
        version=o.version,
        location=o.location or "",
        rows=o.rows,
        bytes=o.bytes,
    )


def _summary_md(outcomes: list[VersionOutcome]) -> str:
    lines = [
        "| session | status | version | base | added | changed | deleted | bytes | full bytes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.relation_id} | {o.status} | {o.version or ''} | {o.base_version or ''} | "
            f"{sum(o.added.values())} | {sum(o.changed.values())} | {sum(o.deleted.values())} | "
            f"{o.bytes} | {o.full_bytes or ''} |"
        )
    return "\n".join(lines)


@op(
    name=PROTECTIVE_OP,
    description="Version live sessions, keeping their rows: a full version for a session that "
    "has none, else an incremental one on top of its latest version (rows added, changed, "
    "deleted per table, diffed by primary key); no version when nothing changed.",
)
def protective_backup_op(
    context: OpExecutionContext,
    config: ProtectiveBackupConfig,
    database: AppDatabase,
    relations: RelationRegistry,
    snapshots: SnapshotStorage,
) -> list[dict]:
    add_missing_run_tags(context, backup_tags(config.type, config.relation_ids, config.uid))
    try:
        outcomes = protective_backup(
            database.engine(),
            relations.load(),
            snapshots.store(),
            type_name=config.type,
            relation_ids=config.relation_ids,
            uid=config.uid,
            run_id=context.run_id,
            max_sessions=config.max_sessions,
            change_column=config.change_column or settings.change_column(),
            max_chain=config.max_chain,
            differential=config.differential,
        )
    except (BackupError, RegistryError, SnapshotError) as exc:
        raise Failure(str(exc)) from exc
    for o in outcomes:
        if o.status in ("full", INCREMENTAL):
            context.log_event(
                backup_materialization(_recorded(o), config.type, config.uid, snapshots.uri)
            )
        if o.status == INCREMENTAL:
            context.log.info(
                f"{config.type} {o.relation_id}: version {o.version} on top of "
                f"{o.base_version}: added {o.added}, changed {o.changed}, deleted {o.deleted}; "
                f"{o.bytes} bytes (full version: {o.full_bytes} bytes)"
            )
        elif o.status == "full":
            context.log.info(
                f"{config.type} {o.relation_id}: full version {o.version} ({o.reason})"
            )
        elif o.status == "unchanged":
            context.log.info(f"{config.type} {o.relation_id}: unchanged since version {o.version}")
        else:
            context.log.error(f"{config.type} {o.relation_id}: failed: {o.reason}")
    counts = {
        s: sum(o.status == s for o in outcomes)
        for s in ("full", "incremental", "unchanged", "failed")
    }
    context.add_output_metadata(
        {
            **counts,
            "incremental_bytes": sum(o.bytes for o in outcomes if o.status == "incremental"),
            "full_bytes_of_their_bases": sum(
                o.full_bytes or 0 for o in outcomes if o.status == "incremental"
            ),
            "sessions": MetadataValue.md(_summary_md(outcomes)),
        }
    )
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise Failure(
            f"{len(failed)} session(s) could not be versioned: "
            + "; ".join(f"{o.relation_id}: {o.reason}" for o in failed)
        )
    return [o.as_dict() for o in outcomes]


@job(
    description="Protective backups of live sessions: full, then incremental versions (only "
    "what changed since the last version); the source rows stay.",
    tags={"htd/job": "protective_backup"},
    executor_def=in_process_executor,
)
def protective_backup_job() -> None:
    protective_backup_op()


class RestoreVersionConfig(Config):
    type: str = Field(description="Backup type from the relation registry, e.g. inst")
    relation_id: str = Field(description="The live session (root key) to put back")
    version: int = Field(
        description="The recorded version to restore (htd-pipelines versions list)"
    )
    uid: str | None = Field(default=None, description="Who restores (audit)")
    max_chain: int = Field(default=DEFAULT_MAX_CHAIN)


@op(
    name=RESTORE_VERSION_OP,
    description="Check the version's chain (catalog rows, files, sha256), back up the current "
    "state as a new version, then in one transaction replace the session's rows with the "
    "version's (children deleted first, parents inserted first), read back and compare.",
)
def restore_version_op(
    context: OpExecutionContext,
    config: RestoreVersionConfig,
    database: AppDatabase,
    relations: RelationRegistry,
    snapshots: SnapshotStorage,
) -> dict:
    add_missing_run_tags(
        context,
        {
            "htd/type": config.type,
            "htd/relation_id": tag_value(config.relation_id),
            "htd/uid": config.uid,
        },
    )
    try:
        result = restore_version(
            database.engine(),
            relations.load(),
            config.type,
            config.relation_id,
            config.version,
            config.uid,
            context.run_id,
            store=snapshots.store(),
            max_chain=config.max_chain,
        )
    except (RestoreRefused, SnapshotError, BackupError, RegistryError) as exc:
        raise Failure(str(exc)) from exc
    p = result.protective
    if p.status in ("full", INCREMENTAL):
        context.log_event(
            backup_materialization(_recorded(p), config.type, config.uid, snapshots.uri)
        )
    before = f"the state before is version {p.version} ({p.status})"
    if result.restored:
        context.log.info(
            f"{config.type} {config.relation_id} restored to version {config.version}: "
            f"{result.rows} rows inserted, {result.removed} removed; {before}"
        )
    else:
        context.log.info(
            f"{config.type} {config.relation_id} is already at version {config.version}"
        )
    if result.corrected:
        context.log.warning(f"values put back after triggers/defaults: {result.corrected}")
    context.add_output_metadata(
        {
            "version": config.version,
            "restored": result.restored,
            "state_before_version": p.version,
            "rows": sum(result.rows.values()),
        }
    )
    return result.as_dict()


@job(
    description="Restore a live session to a recorded version (full + incrementals composed): "
    "the current state is backed up first; all or nothing.",
    tags={"htd/job": "restore_version"},
    executor_def=in_process_executor,
)
def restore_version_job() -> None:
    restore_version_op()


def protective_run_config(
    type_name: str,
    relation_ids: list,
    uid: str | None = None,
    max_sessions: int | None = None,
    differential: bool = False,
) -> dict:
    config: dict = {"type": type_name, "relation_ids": [str(r) for r in relation_ids], "uid": uid}
    if max_sessions is not None:
        config["max_sessions"] = max_sessions
    if differential:
        config["differential"] = True
    return {"ops": {PROTECTIVE_OP: {"config": config}}}


def restore_version_run_config(
    type_name: str, relation_id: object, version: int, uid: str | None = None
) -> dict:
    return {
        "ops": {
            RESTORE_VERSION_OP: {
                "config": {
                    "type": type_name,
                    "relation_id": str(relation_id),
                    "version": version,
                    "uid": uid,
                }
            }
        }
    }
