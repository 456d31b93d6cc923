"""The backup's delete, free of Dagster: proven before it commits.

In one transaction, children first, each table's snapshot files are read and checked (sha256,
footer, row count) and every row of the sessions is deleted with
`DELETE ... RETURNING` its values, read by a path of its own (not the extract's: on PostgreSQL
the driver's row decoding instead of ADBC) and compared value for value with the snapshot: a
row added, removed or changed since the extract aborts the delete, naming table, key and both
values. Then the restore itself is rehearsed in a savepoint (`restore.rehearse`: the restore's
own write path, triggers, defaults, conversions, read-back and corrections) and rolled back to
the savepoint. Only when both hold is the delete committed; otherwise nothing is deleted, and
a backup that would not restore is discarded (a `backup_discarded` row in the operation log
gives the reason).
"""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines.backup import (
    BackupError,
    BackupPlan,
    RecordedBackup,
    coerce_ids,
    extract_table,
    plan_backup,
    record_backup,
    release_sessions,
    resolved,
)
from htd_pipelines.dialects import read
from htd_pipelines.dialects.arrow_rows import differences, sort_by_key
from htd_pipelines.dialects.write import delete_rows
from htd_pipelines.markers import finish_claims
from htd_pipelines.registry.resolved import TablePlan
from htd_pipelines.registry.spec import Registry
from htd_pipelines.restore import RestoreContext, RestoreRefused, rehearse
from htd_pipelines.store import catalog
from htd_pipelines.store.snapshots import SnapshotError, SnapshotStore


class NotRestorable(BackupError):
    """The rehearsed restore of a backup failed: nothing was deleted, the backup discarded."""


def _key_rows(t: pa.Table, key: list[str]) -> set[tuple]:
    return set(zip(*[t[c].to_pylist() for c in key], strict=True))


def _delete_returning(conn: Connection, tplan: TablePlan, ids: list) -> pa.Table:
    """Delete the sessions' rows of one table; their values as they were, in snapshot schema."""
    try:
        return delete_rows(conn, tplan, ids)
    except (sa.exc.DBAPIError, conn.dialect.dbapi.Error) as exc:
        reason = str(getattr(exc, "orig", exc)).strip()
        raise BackupError(
            f"table {tplan.name}: deleting the backed-up rows failed ({reason}); "
            "nothing was deleted"
        ) from exc
    except (pa.ArrowException, ValueError, OverflowError, TypeError) as exc:
        raise BackupError(
            f"table {tplan.name}: the rows being deleted cannot be read back exactly ({exc}); "
            "nothing was deleted"
        ) from exc


def _delete_captured(conn: Connection, tplan: TablePlan, ctx: RestoreContext) -> int:
    """Delete one table's rows of the sessions, only if they are the snapshot's rows, value
    for value; else BackupError naming the table, the key and both values."""
    key = list(tplan.primary_key)
    captured = sort_by_key(ctx.table(tplan.name), key)  # the files checked (sha256) first
    deleted = sort_by_key(_delete_returning(conn, tplan, ctx.ids), key)
    if deleted.num_rows != captured.num_rows or not all(
        deleted.column(c).equals(captured.column(c)) for c in key
    ):
        extra = sorted(_key_rows(deleted, key) - _key_rows(captured, key), key=str)[:5]
        gone = sorted(_key_rows(captured, key) - _key_rows(deleted, key), key=str)[:5]
        raise BackupError(
            f"table {tplan.name}: the rows to delete are not the rows captured "
            f"({deleted.num_rows} found vs {captured.num_rows} backed up; "
            f"not in the backup: {extra}; no longer there: {gone}); nothing was deleted"
        )
    changed = differences(captured, deleted, key, limit=5)
    if changed:
        shown = "; ".join(
            f"row {k} column {col}: backed up {was!r}, now {now!r}" for k, col, was, now in changed
        )
        raise BackupError(
            f"table {tplan.name}: rows changed since they were backed up ({shown}); "
            "nothing was deleted: back the session up again"
        )
    return deleted.num_rows


def delete_source(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    plan: BackupPlan,
    recorded: list[RecordedBackup],
) -> dict[str, int]:
    """Delete exactly the captured rows in one transaction, children first, proven (see the
    module's docstring) before it commits; else roll back: nothing is deleted."""
    if not recorded:
        return {}
    rtype = resolved(engine, registry, plan.type, plan.run_id)
    with engine.connect() as conn:
        records = [catalog.get_backup(conn, r.backup_id) for r in recorded]
    manifests = tuple(r.manifest for r in records)
    ids = coerce_ids(rtype, list(plan.relation_ids))
    ctx = RestoreContext(None, manifests, rtype, store, ids)
    counts: dict[str, int] = {}
    try:
        with engine.begin() as conn:
            for tplan in reversed(rtype.tables):
                counts[tplan.name] = _delete_captured(conn, tplan, ctx)
            _prove_restorable(conn, ctx)
            _hold_and_recheck(conn, ctx)
            catalog.mark_source_deleted(conn, [r.backup_id for r in recorded])
            if plan.from_markers:
                finish_claims(conn, plan.type, list(plan.relation_ids), plan.run_id)
            catalog.log_operation(
                conn,
                action="delete",
                uid=plan.uid,
                type_name=plan.type,
                relation_ids=list(plan.relation_ids),
                backup_ids=[r.backup_id for r in recorded],
                counts=counts,
                run_id=plan.run_id,
            )
    except Exception as exc:
        if plan.from_markers or isinstance(exc, NotRestorable):
            discard_backups(engine, store, recorded, plan, reason=str(exc))
        else:  # kept, marked: `backups` and `show` say so, and it is not the newest backup
            catalog.mark_delete_failed(engine, [r.backup_id for r in recorded])
        catalog.log_operation_now(
            engine,
            action="delete",
            status="failed",
            uid=plan.uid,
            type_name=plan.type,
            relation_ids=list(plan.relation_ids),
            backup_ids=[r.backup_id for r in recorded],
            run_id=plan.run_id,
            message=str(exc),
        )
        raise
    finally:
        release_sessions(engine, plan)
    return counts


def _hold_and_recheck(conn: Connection, ctx: RestoreContext) -> None:
    """Just before the commit, no row of the sessions may be left in any table: a row another
    connection added (and committed) while this transaction deleted would be an orphan no
    backup holds (without foreign keys nothing else stops it). PostgreSQL: each table is
    locked in SHARE mode (waits for writers in flight, keeps new ones out until the commit,
    a few milliseconds later); MariaDB/MySQL: a locking read (a plain one would read the
    transaction's snapshot, not what others committed); SQLite: this transaction already
    holds the database's write lock."""
    dialect = conn.dialect.name
    prep = conn.dialect.identifier_preparer
    for tplan in reversed(ctx.rtype.tables):
        if dialect == "postgresql":
            conn.exec_driver_sql(f"LOCK TABLE {prep.format_table(tplan.table)} IN SHARE MODE")
        stmt = sa.select(sa.func.count()).select_from(tplan.table).where(tplan.where_owned())
        if dialect in ("mysql", "mariadb"):
            stmt = stmt.with_for_update(read=True)
        left = conn.execute(stmt, {"ids": ctx.ids}).scalar_one()
        if left:
            raise BackupError(
                f"table {tplan.name}: {left} row(s) of the session were added while it was "
                "being deleted; nothing was deleted: back the session up again"
            )


def _prove_restorable(conn: Connection, ctx: RestoreContext) -> None:
    """The restore, rehearsed where the rows were just deleted, then rolled back to before it."""
    try:
        rehearse(conn, ctx)
    except (RestoreRefused, SnapshotError, sa.exc.DBAPIError) as exc:
        raise NotRestorable(
            f"{ctx.label} would not restore exactly, so nothing was deleted and the backup "
            f"was discarded: {exc}"
        ) from exc


def backup_sessions(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    *,
    type_name: str,
    relation_ids: list,
    uid: str | None,
    run_id: str,
    keep_source: bool = False,
) -> list[RecordedBackup]:
    """The whole backup in one call (plan, every table, record, delete): what backup_job's
    graph does op by op, for jobs that back up as one step of their own (test cleanup)."""
    plan = plan_backup(
        engine,
        registry,
        store,
        type_name=type_name,
        relation_ids=relation_ids,
        uid=uid,
        keep_source=keep_source,
        run_id=run_id,
    )
    try:
        tables = [t.name for t in resolved(engine, registry, type_name, run_id).tables]
        extracts = [extract_table(engine, registry, store, plan, t) for t in tables]
        recorded = record_backup(engine, registry, store, plan, extracts)
        if not keep_source:
            delete_source(engine, registry, store, plan, recorded)
    finally:
        read.close_snapshot(plan.run_id)
        release_sessions(engine, plan)
    return recorded


def discard_backups(
    engine: Engine,
    store: SnapshotStore,
    recorded: list[RecordedBackup],
    plan: BackupPlan,
    reason: str,
) -> None:
    """Remove backups whose source rows were not deleted (a marker run that failed, or a
    backup that would not restore): the retry makes the one backup of that session. Catalog
    rows first, then the files."""
    ids = [r.backup_id for r in recorded]
    with engine.begin() as conn:
        conn.execute(
            catalog.back_up.delete().where(
                catalog.back_up.c.id.in_(ids), catalog.back_up.c.source_deleted == 0
            )
        )
        catalog.log_operation(
            conn,
            action="backup_discarded",
            status="ok",
            uid=plan.uid,
            type_name=plan.type,
            relation_ids=list(plan.relation_ids),
            backup_ids=ids,
            run_id=plan.run_id,
            message=f"the delete failed, the source rows are still there: {reason}",
        )
    for r in recorded:
        store.delete_dir(r.location)
