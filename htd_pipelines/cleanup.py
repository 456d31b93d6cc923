"""Test-session cleanup (the original clearTestSessions), through the same registry."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from htd_pipelines.backup import BackupError, resolved
from htd_pipelines.delete import backup_sessions
from htd_pipelines.dialects.engine import comparable_timestamp
from htd_pipelines.registry.resolved import ResolvedType
from htd_pipelines.registry.spec import Registry
from htd_pipelines.store import catalog
from htd_pipelines.store.snapshots import SnapshotStore


def _test_predicate(rtype: ResolvedType) -> tuple[sa.Table, sa.ColumnElement[bool]]:
    life = rtype.btype.lifecycle
    if not (life.test_flag and life.created_at):
        raise BackupError(
            f"type {rtype.btype.name!r} declares no lifecycle test_flag/created_at in the "
            "registry: test sessions cannot be recognised"
        )
    root = rtype.root.table
    flag = root.c[life.test_flag]
    truthy = flag.is_(True) if isinstance(flag.type, sa.Boolean) else flag == 1
    return root, truthy


def find_test_sessions(
    engine: Engine, rtype: ResolvedType, older_than: dt.timedelta, limit: int
) -> list:
    """Keys of test sessions created before now - older_than, oldest first."""
    root, truthy = _test_predicate(rtype)
    created = root.c[rtype.btype.lifecycle.created_at]
    key = root.c[rtype.root.rule.key]
    cutoff = comparable_timestamp(engine, created.type, dt.datetime.now(dt.UTC) - older_than)
    if engine.dialect.name == "sqlite":
        cutoff = cutoff.isoformat(sep=" ")  # SQLite compares the stored text
    stmt = sa.select(key).where(truthy, created < cutoff).order_by(created, key).limit(limit)
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def purge_test_sessions(
    engine: Engine, rtype: ResolvedType, ids: list, *, uid: str | None, run_id: str
) -> dict[str, int]:
    """Delete test sessions without a backup: one transaction, children first, and only
    sessions that are test sessions (the predicate is part of every statement's scope)."""
    root, truthy = _test_predicate(rtype)
    key = root.c[rtype.root.rule.key]
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        # FOR UPDATE: the flag is read as committed and stays so until the deletes commit
        check = sa.select(key).where(key.in_(ids), truthy).with_for_update()
        test_ids = list(conn.execute(check).scalars())
        if set(map(str, test_ids)) != set(map(str, ids)):
            raise BackupError(
                "refusing to purge sessions that are not test sessions: "
                + ", ".join(str(i) for i in ids if str(i) not in set(map(str, test_ids)))
            )
        for tplan in reversed(rtype.tables):
            result = conn.execute(sa.delete(tplan.table).where(tplan.where_owned()), {"ids": ids})
            counts[tplan.name] = result.rowcount
        catalog.log_operation(
            conn,
            action="purge_test",
            uid=uid,
            type_name=rtype.btype.name,
            relation_ids=ids,
            counts=counts,
            run_id=run_id,
        )
    return counts


def clean_test_sessions(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    *,
    type_name: str,
    older_than: dt.timedelta,
    batch_size: int,
    max_batches: int,
    backup_first: bool,
    uid: str | None,
    run_id: str,
) -> dict:
    """Remove old test sessions in bounded batches; returns sessions and rows removed."""
    rtype = resolved(engine, registry, type_name, run_id)
    catalog.ensure_catalog(engine)
    sessions, rows, batches = 0, 0, 0
    backups: list[int] = []
    while batches < max_batches:
        ids = find_test_sessions(engine, rtype, older_than, batch_size)
        if not ids:
            break
        if backup_first:
            recorded = backup_sessions(
                engine,
                registry,
                store,
                type_name=type_name,
                relation_ids=ids,
                uid=uid,
                run_id=run_id,
            )
            backups += [r.backup_id for r in recorded]
            rows += sum(sum(r.rows.values()) for r in recorded)
        else:
            rows += sum(purge_test_sessions(engine, rtype, ids, uid=uid, run_id=run_id).values())
        sessions += len(ids)
        batches += 1
    return {"sessions": sessions, "rows": rows, "batches": batches, "backup_ids": backups}
