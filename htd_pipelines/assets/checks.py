"""Asset checks on backup_catalog: every backup's snapshots verified (verify_backups_job)."""

import datetime as dt
import os

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    Config,
    Failure,
    asset_check,
)
from pydantic import Field

from htd_pipelines.assets.catalog import BACKUP_CATALOG
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.resources import AppDatabase, RelationRegistry
from htd_pipelines.verify import verify_backups


class VerifyConfig(Config):
    backup_ids: list[int] = Field(
        default=[], description="Backups to verify (empty: every backup that is due)"
    )
    recheck_after_hours: float = Field(
        default=24,
        description="A backup verified OK this recently, manifest unchanged, is not re-read",
    )
    full_restore_env: str | None = Field(
        default=None,
        description="Name of an environment variable holding the URL of a scratch database "
        "(with the schema): each backup is test-restored there and rolled back",
    )


@asset_check(
    asset=BACKUP_CATALOG,
    name="snapshots_verified",
    description="Re-reads every due backup's snapshot files and checks them against the "
    "manifest (exists, sha256, size, Parquet readable, rows, columns; decryption), optionally "
    "test-restores them into a scratch database; results recorded per backup "
    "(htd_verification) and in the operation log.",
)
def snapshots_verified(
    context: AssetCheckExecutionContext,
    config: VerifyConfig,
    database: AppDatabase,
    relations: RelationRegistry,
) -> AssetCheckResult:
    scratch = None
    if config.full_restore_env:
        url = os.environ.get(config.full_restore_env)
        if not url:
            raise Failure(f"environment variable {config.full_restore_env} is not set")
        scratch = get_engine(url)
    outcome = verify_backups(
        database.engine(),
        relations.load(),
        backup_ids=config.backup_ids or None,
        run_id=context.run.run_id,
        recheck_after=dt.timedelta(hours=config.recheck_after_hours),
        full_restore_engine=scratch,
    )
    for backup_id, message in outcome.failed.items():
        context.log.error(f"backup {backup_id} failed verification: {message}")
    return AssetCheckResult(
        passed=outcome.ok,
        severity=AssetCheckSeverity.ERROR,
        description=(
            "all verified backups are intact"
            if outcome.ok
            else f"{len(outcome.failed)} backup(s) failed verification"
        ),
        metadata={
            "checked": len(outcome.checked),
            "skipped_recently_verified": len(outcome.skipped),
            "failed": len(outcome.failed),
            "failures": {str(k): v for k, v in outcome.failed.items()},
            "full_restore": scratch is not None,
        },
    )
