"""Integrity verification of backups: every file re-read and checked against its manifest
(exists, sha256, size, Parquet readable, row count, columns; decryption where encrypted),
optionally a full test restore into a scratch database; the outcome recorded per backup."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from htd_pipelines.registry.spec import Registry
from htd_pipelines.restore import restore_backup
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import BackupRecord, verification
from htd_pipelines.store.snapshots import SnapshotStore


@dataclass
class VerifyOutcome:
    checked: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # verified recently, manifest unchanged
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def manifest_digest(record: BackupRecord) -> str:
    return hashlib.sha256(record.manifest_json.encode()).hexdigest()


def last_verifications(engine: Engine, backup_ids: list[int]) -> dict[int, dict]:
    """The newest verification row per backup."""
    if not backup_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(verification)
            .where(verification.c.backup_id.in_(backup_ids))
            .order_by(verification.c.id)
        ).mappings()
        return {int(r["backup_id"]): dict(r) for r in rows}


def check_backup_files(record: BackupRecord, store: SnapshotStore | None = None) -> None:
    """Raises SnapshotError naming the file and table at fault (an incremental version's
    deleted-key files included)."""
    from htd_pipelines.versions.chain import check_files

    manifest = record.manifest
    check_files(store or SnapshotStore(manifest.snapshot_uri), manifest)


def verify_backups(
    engine: Engine,
    registry: Registry,
    *,
    backup_ids: list[int] | None,
    run_id: str | None,
    recheck_after: dt.timedelta,
    full_restore_engine: Engine | None = None,
    store: SnapshotStore | None = None,
) -> VerifyOutcome:
    """Verify the given backups (all when None). A backup verified OK within `recheck_after`
    whose manifest is unchanged is skipped: only what is new is checked."""
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        records = (
            [catalog.get_backup(conn, b) for b in backup_ids]
            if backup_ids
            else catalog.find_backups(conn)
        )
    last = last_verifications(engine, [r.id for r in records])
    now = catalog.utcnow()
    outcome = VerifyOutcome()
    for record in sorted(records, key=lambda r: r.id):
        digest = manifest_digest(record)
        prev = last.get(record.id)
        if (
            not backup_ids
            and full_restore_engine is None
            and prev is not None
            and prev["status"] == "ok"
            and prev["manifest_sha256"] == digest
            and prev["verified_at"] > now - recheck_after
        ):
            outcome.skipped.append(record.id)
            continue
        message = None
        try:
            check_backup_files(record, store)
            if full_restore_engine is not None and record.manifest.kind != "full":
                # an incremental cannot be inserted alone: prove its whole chain composes
                from htd_pipelines.versions.chain import compose_version

                compose_version(engine, record.type, record.relation_id, record.version, store)
            elif full_restore_engine is not None:
                restore_backup(
                    engine,
                    registry,
                    record.id,
                    uid="verify",
                    run_id=run_id,
                    target_engine=full_restore_engine,
                    store=store,
                    rehearsal=True,
                )
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, none stops the rest
            message = str(exc)
            outcome.failed[record.id] = message
        else:
            outcome.checked.append(record.id)
        status = "failed" if message else "ok"
        with engine.begin() as conn:
            conn.execute(
                verification.insert().values(
                    backup_id=record.id,
                    verified_at=catalog.utcnow(),
                    run_id=run_id,
                    status=status,
                    full_restore=int(full_restore_engine is not None),
                    manifest_sha256=digest,
                    message=message,
                )
            )
            catalog.log_operation(
                conn,
                action="verify",
                status=status,
                type_name=record.type,
                relation_ids=[record.relation_id],
                backup_ids=[record.id],
                run_id=run_id,
                message=message,
            )
    return outcome
