"""Restoring a live session to one of its versions, free of Dagster.

`restore_version`: back up the current state (a new version), then in one transaction delete
the session's rows (children first), insert the composed rows of the version (parents first),
read them back and compare value for value; anything off rolls everything back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines import settings
from htd_pipelines.backup import coerce_ids, existing_ids
from htd_pipelines.dialects.arrow_rows import differences, sort_by_key
from htd_pipelines.dialects.write import insert_rows, read_rows
from htd_pipelines.registry.resolved import ResolvedType, TablePlan, resolve_type
from htd_pipelines.registry.spec import Registry
from htd_pipelines.restore import RestoreRefused, find_conflicts, find_missing_parents, verify_rows
from htd_pipelines.store import catalog
from htd_pipelines.store.snapshots import SnapshotStore
from htd_pipelines.versions.chain import compose, compose_version, schema_problems, version_chain
from htd_pipelines.versions.diff import ChainError, conform
from htd_pipelines.versions.protective import (
    DEFAULT_MAX_CHAIN,
    VersionOutcome,
    full_version,
    protective_backup,
)


@dataclass(frozen=True)
class VersionRestore:
    type: str
    relation_id: str
    version: int
    backup_id: int  # the catalog row of the version restored
    protective: VersionOutcome  # the version that holds the state before the restore
    rows: dict[str, int]  # rows inserted per table
    removed: dict[str, int]  # rows deleted per table
    corrected: dict[str, int]  # cells put back after a trigger/default changed them
    restored: bool  # False: the session was already exactly at that version

    def as_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["protective"] = self.protective.as_dict()
        return doc


def _same(a: pa.Table, b: pa.Table, key: list[str]) -> list:
    return differences(sort_by_key(a, key), sort_by_key(b, key), key, limit=1)


def restore_version(
    engine: Engine,
    registry: Registry,
    type_name: str,
    relation_id: object,
    version: int,
    uid: str | None,
    run_id: str | None,
    *,
    store: SnapshotStore | None = None,
    max_chain: int = DEFAULT_MAX_CHAIN,
) -> VersionRestore:
    """Put a live session back to a recorded version: all of it, or nothing.

    Refused before anything is written when the version's chain is broken (naming the
    version), the schema changed, or the session does not exist. Then the current state is
    backed up (a new version, or "unchanged"; compared row for row, whatever the change
    column says), and in one transaction: the session's rows are
    read and must still be that state, deleted children first, the version's rows inserted
    parents first, read back and compared value for value; anything off rolls back.
    """
    store = store or SnapshotStore(settings.snapshot_uri())
    run_id = run_id or f"restore-version-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
    catalog.ensure_catalog(engine)
    rtype = resolve_type(engine, registry.get(type_name), registry.path)
    ids = coerce_ids(rtype, [relation_id])
    rid = str(ids[0])
    what = f"version {version} of {type_name} {rid}"
    if not existing_ids(engine, rtype, ids):
        raise RestoreRefused(
            f"{type_name} {rid} does not exist (no row in {rtype.root.name}."
            f"{rtype.root.rule.key}): restore_version puts back live sessions; a deleted "
            "session comes back with restore_job; nothing was written"
        )
    chain, target = _composed_version(engine, store, rtype, type_name, rid, version, what)
    protective, before = _back_up_current_state(
        engine,
        registry,
        store,
        rtype,
        type_name,
        rid,
        what,
        uid=uid,
        run_id=run_id,
        max_chain=max_chain,
    )
    keys = {t.name: list(t.primary_key) for t in rtype.tables}
    if all(not _same(target[n], before[n], keys[n]) for n in keys):
        catalog.log_operation_now(
            engine,
            action="restore_version",
            uid=uid,
            type_name=type_name,
            relation_ids=[rid],
            backup_ids=[chain[-1].id],
            run_id=run_id,
            message=f"already at version {version}: nothing to do",
        )
        return VersionRestore(
            type_name, rid, version, chain[-1].id, protective, {}, {}, {}, restored=False
        )
    rows: dict[str, int] = {}
    removed: dict[str, int] = {}
    corrected: dict[str, int] = {}
    try:
        with engine.begin() as conn:
            root = rtype.root
            root_key = root.table.c[root.rule.key]
            conn.execute(sa.select(root_key).where(root_key.in_(ids)).with_for_update())
            for tplan in rtype.tables:  # still the state just backed up?
                now = read_rows(conn, tplan, ids)
                off = _same(before[tplan.name], now, keys[tplan.name])
                if off:
                    k, column, expected, got = off[0]
                    detail = (
                        f"{got} rows instead of {expected}"
                        if column == "*"
                        else f"column {column} of row {k} is {got!r}, was {expected!r}"
                    )
                    raise RestoreRefused(
                        f"{what}: the session changed after its current state was backed up "
                        f"as version {protective.version} (table {tplan.name}: {detail}); "
                        "nothing was written, try again"
                    )
            for tplan in reversed(rtype.tables):  # children first
                result = conn.execute(
                    sa.delete(tplan.table).where(tplan.where_owned()), {"ids": ids}
                )
                removed[tplan.name] = result.rowcount
                if result.rowcount != before[tplan.name].num_rows:
                    raise RestoreRefused(
                        f"{what}: {result.rowcount} rows of {tplan.name} to replace, the backup "
                        f"of the current state (version {protective.version}) has "
                        f"{before[tplan.name].num_rows}; rolled back, nothing was written"
                    )
            integrity = (sa.exc.IntegrityError, conn.dialect.dbapi.IntegrityError)
            for tplan in rtype.tables:  # parents first
                data = target[tplan.name]
                try:
                    with conn.begin_nested():
                        insert_rows(conn, tplan, data)
                except integrity as exc:
                    raise _refusal(conn, rtype, target, tplan, what, exc) from exc
                rows[tplan.name] = data.num_rows
            for tplan in rtype.tables:
                fixed = verify_rows(conn, tplan, target[tplan.name], ids)
                if fixed:
                    corrected[tplan.name] = fixed
            catalog.log_operation(
                conn,
                action="restore_version",
                uid=uid,
                type_name=type_name,
                relation_ids=[rid],
                backup_ids=[chain[-1].id, protective.backup_id],
                counts=rows,
                run_id=run_id,
                message=f"restored version {version}; the state before is version "
                f"{protective.version} ({protective.status})"
                + (f"; corrected cells: {corrected}" if corrected else ""),
            )
    except Exception as exc:
        catalog.log_operation_now(
            engine,
            action="restore_version",
            status="failed",
            uid=uid,
            type_name=type_name,
            relation_ids=[rid],
            backup_ids=[chain[-1].id],
            run_id=run_id,
            message=str(exc),
        )
        raise
    return VersionRestore(
        type_name, rid, version, chain[-1].id, protective, rows, removed, corrected, True
    )


def _composed_version(
    engine: Engine,
    store: SnapshotStore,
    rtype: ResolvedType,
    type_name: str,
    rid: str,
    version: int,
    what: str,
) -> tuple[list[catalog.BackupRecord], dict[str, pa.Table]]:
    """The version's chain and its composed rows in the snapshot schema; refused (nothing
    written) when the chain is broken or the registry or the schema changed since."""
    try:
        with engine.connect() as conn:
            chain = version_chain(conn, type_name, rid, version)
        target = compose(chain, store)
    except ChainError as exc:
        raise RestoreRefused(f"{what} cannot be restored: {exc}; nothing was written") from exc
    problems = schema_problems(chain[0].manifest, rtype, target)
    if problems:
        raise RestoreRefused(
            f"{what} no longer matches the registry or the schema: "
            + "; ".join(problems)
            + "; nothing was written"
        )
    return chain, {t.name: conform(target[t.name], t.arrow_schema()) for t in rtype.tables}


def _back_up_current_state(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    rtype: ResolvedType,
    type_name: str,
    rid: str,
    what: str,
    *,
    uid: str | None,
    run_id: str,
    max_chain: int,
) -> tuple[VersionOutcome, dict[str, pa.Table]]:
    """Back up the session's current state (a new version, or "unchanged") and read that
    version back, in the snapshot schema; refused (nothing written) when it cannot be."""
    [protective] = protective_backup(
        engine,
        registry,
        store,
        type_name=type_name,
        relation_ids=[rid],
        uid=uid,
        run_id=run_id,
        change_column=None,  # the state about to be replaced is compared whole
        max_chain=max_chain,
    )
    if protective.status == "failed":
        raise RestoreRefused(
            f"{what}: the current state could not be backed up first ({protective.reason}); "
            "nothing was written"
        )
    try:
        before = compose_version(engine, type_name, rid, protective.version, store)
    except ChainError as exc:
        if protective.status != "unchanged":
            raise RestoreRefused(
                f"{what}: the backup of the current state (version {protective.version}) does "
                f"not read back ({exc}); nothing was written"
            ) from exc
        # the state is the latest version's, but that one cannot be read back: keep it whole
        protective = full_version(
            engine,
            registry,
            store,
            type_name,
            rid,
            f"version {protective.version} holds the current state but cannot be read back: {exc}",
            uid=uid,
            run_id=run_id,
        )
        try:
            before = compose_version(engine, type_name, rid, protective.version, store)
        except ChainError as exc2:
            raise RestoreRefused(
                f"{what}: the backup of the current state (version {protective.version}) does "
                f"not read back ({exc2}); nothing was written"
            ) from exc2
    return protective, {t.name: conform(before[t.name], t.arrow_schema()) for t in rtype.tables}


def _refusal(
    conn: Connection,
    rtype: ResolvedType,
    target: dict[str, pa.Table],
    tplan: TablePlan,
    what: str,
    exc: Exception,
) -> RestoreRefused:
    """A failed insert as the conflicting keys / missing parents (rolled back whole)."""
    conflicts = {
        t.name: hits for t in rtype.tables if (hits := find_conflicts(conn, t, target[t.name]))
    }
    if conflicts:
        listed = "; ".join(f"{t}: {k}" for t, k in conflicts.items())
        return RestoreRefused(
            f"{what}: rows with these keys exist outside the session ({listed}); "
            "rolled back, nothing was written"
        )
    missing = find_missing_parents(conn, rtype, target)
    if missing:
        listed = "; ".join(f"{fk}: {v}" for fk, v in missing.items())
        return RestoreRefused(
            f"{what}: parent rows are missing ({listed}); rolled back, nothing was written"
        )
    return RestoreRefused(
        f"{what}: inserting into {tplan.name} failed "
        f"({str(getattr(exc, 'orig', exc)).strip()}); rolled back, nothing was written"
    )
