"""Protective (incremental) versions of live sessions, free of Dagster.

`protective_backup`: a new version of each session that still exists. A session without a
version gets a full one (the backup path with keep_source); otherwise an *incremental* one on
top of its latest version: the session's rows now, diffed by primary key against the latest
version's state (full + chain of incrementals) -> per changed table a Parquet file of the
added and changed rows (whole rows) and one of the deleted keys, a manifest (kind
"incremental", base_version, counts, sha256 per file) and a catalog row. Nothing changed:
no version ("unchanged").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines.backup import (
    BackupError,
    coerce_ids,
    existing_ids,
    file_reference,
    pk_digest,
)
from htd_pipelines.delete import backup_sessions
from htd_pipelines.dialects.arrow_rows import differences, sort_by_key
from htd_pipelines.registry.resolved import ResolvedType, TablePlan, resolve_type
from htd_pipelines.registry.spec import Registry
from htd_pipelines.restore import read_snapshot_table
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import BackupRecord
from htd_pipelines.store.manifest import MANIFEST_FILE, Manifest, TableManifest
from htd_pipelines.store.snapshots import SnapshotError, SnapshotStore, WrittenFile
from htd_pipelines.versions.chain import (
    DELETED_SUFFIX,
    INCREMENTAL,
    compose,
    schema_problems,
    version_chain,
)
from htd_pipelines.versions.diff import (
    ChainError,
    TableDiff,
    apply_changes,
    conform,
    diff_table,
    probe,
    read_current,
    row_digest,
    table_marks,
)

DEFAULT_MAX_SESSIONS = 100

DEFAULT_MAX_CHAIN = 30  # incrementals on top of one full version; then a new full version


class _NeedsFull(Exception):  # control flow (not an error): make a full version instead
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VersionOutcome:
    """One session's protective backup: a new full or incremental version, or unchanged."""

    relation_id: str
    status: str  # full | incremental | unchanged | failed
    version: int | None = None  # the new version (unchanged: the latest one)
    backup_id: int | None = None
    base_version: int | None = None
    added: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    bytes: int = 0  # this version's snapshot files
    full_bytes: int | None = None  # the files of the full version its chain starts with
    reason: str | None = None  # why a full version (or why it failed)
    location: str | None = None
    rows: dict[str, int] = field(default_factory=dict)  # rows stored in this version's files
    delta: str | None = None  # an incremental version: "incremental" | "differential"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _columns_doc(tplan: TablePlan) -> list[dict]:
    return [
        {
            "name": c.name,
            "arrow_type": str(c.arrow),
            "sql_type": c.sql_type,
            "nullable": c.nullable,
            "kind": c.kind,
        }
        for c in tplan.columns
    ]


def _file_refs(tplan: TablePlan, rows: pa.Table) -> list[dict]:
    """Remote-file references of the rows (same form as a full version's manifest)."""
    key = list(tplan.primary_key)
    refs = []
    for col in tplan.rule.files:
        found = rows.filter(pc.is_valid(rows.column(col)))
        if found.num_rows:
            refs.append(file_reference(col, key, found))
    return refs


def _write(store: SnapshotStore, path: str, table: pa.Table) -> WrittenFile:
    writer = store.parquet_writer(path, table.schema)
    for batch in table.to_batches():
        writer.write(batch)
    return writer.close()


def _latest_versions(conn: Connection, type_name: str) -> dict[str, BackupRecord]:
    latest: dict[str, BackupRecord] = {}
    for r in catalog.find_backups(conn, type_name=type_name):
        if r.relation_id not in latest or r.version > latest[r.relation_id].version:
            latest[r.relation_id] = r
    return latest


def _candidates(engine: Engine, rtype: ResolvedType, latest: dict[str, BackupRecord]) -> list:
    """Every session of the type (test sessions left out), never-versioned ones first, then
    the ones whose latest version is oldest."""
    root = rtype.root
    key = root.table.c[root.rule.key]
    stmt = sa.select(key).order_by(key)
    flag = rtype.btype.lifecycle.test_flag
    if flag:
        col = root.table.c[flag]
        stmt = stmt.where(sa.or_(col.is_(None), col == sa.false()))
    with engine.connect() as conn:
        ids = [str(v) for v in conn.execute(stmt).scalars()]
    never = [i for i in ids if i not in latest]
    seen = sorted((i for i in ids if i in latest), key=lambda i: latest[i].created_at)
    return never + seen


def _full_digest(store: SnapshotStore, full: Manifest, tplan: TablePlan) -> str | None:
    """The row digest of one table of a full version, from its file (None if unreadable: the
    exact comparison that follows then reports what is wrong with it)."""
    try:
        table = read_snapshot_table(store, full, tplan.name)
    except (SnapshotError, KeyError):
        return None
    return row_digest(conform(table, tplan.arrow_schema()), list(tplan.primary_key))


def _incremental(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    rtype: ResolvedType,
    latest_record: BackupRecord,
    *,
    uid: str | None,
    run_id: str,
    change_column: str | None,
    max_chain: int,
    differential: bool = False,
) -> VersionOutcome:
    """An incremental version of one session on top of its latest version, or with
    `differential` a differential one on top of its full version (or unchanged either way).
    Raises _NeedsFull when only a full version will do."""
    type_name, rid = latest_record.type, latest_record.relation_id
    ids = coerce_ids(rtype, [rid])
    try:
        with engine.connect() as conn:
            chain = version_chain(conn, type_name, rid, latest_record.version)
    except ChainError as exc:
        raise _NeedsFull(f"the latest version cannot be used as a base: {exc}") from exc
    full, latest = chain[0].manifest, chain[-1].manifest
    problems = schema_problems(full, rtype)
    if problems:
        raise _NeedsFull(
            f"the registry or the schema changed since version {full.version}: "
            + "; ".join(problems)
        )
    suspects, current = _suspect_tables(engine, store, rtype, ids, latest, change_column)
    unchanged = VersionOutcome(
        rid,
        "unchanged",
        version=latest.version,
        backup_id=chain[-1].id,
        base_version=latest.base_version,
        full_bytes=full.total_bytes,
        location=latest.location,
    )
    if not suspects:
        return unchanged
    if differential:
        # everything that changed since the full version, whatever the previous versions hold
        chain = chain[:1]
        suspects = [t.name for t in rtype.tables]
    if len(chain) - 1 >= max_chain:
        raise _NeedsFull(
            f"version {latest.version} already has {len(chain) - 1} incremental versions on "
            f"top of full version {full.version} (max_chain {max_chain})"
        )
    try:
        base = compose(chain, store)
    except ChainError as exc:
        raise _NeedsFull(f"the latest version cannot be used as a base: {exc}") from exc
    diffs: dict[str, TableDiff] = {}
    for tplan in rtype.tables:
        if tplan.name not in suspects:
            continue
        if tplan.name not in current:
            current[tplan.name] = read_current(engine, tplan, ids)
        d = _checked_diff(
            tplan,
            base[tplan.name],
            current[tplan.name],
            where=f"the new version of {type_name} {rid}, table {tplan.name},",
        )
        if not d.empty:
            diffs[tplan.name] = d
    if not diffs:
        return unchanged
    return _record_incremental(
        engine,
        registry,
        store,
        rtype,
        chain,
        diffs,
        current,
        uid=uid,
        run_id=run_id,
        change_column=change_column,
        delta="differential" if differential else INCREMENTAL,
    )


def _suspect_tables(
    engine: Engine,
    store: SnapshotStore,
    rtype: ResolvedType,
    ids: list,
    latest: Manifest,
    change_column: str | None,
) -> tuple[list[str], dict[str, pa.Table]]:
    """The tables that may have changed since the latest version, and the current rows of
    those read to tell. A table with the change column, whose marks the latest version
    recorded, is probed (rows, key digest, largest change value); the others are read and
    their row digest compared."""
    marks = latest.state_marks if latest.kind == INCREMENTAL else None
    current: dict[str, pa.Table] = {}
    suspects: list[str] = []
    for tplan in rtype.tables:
        name, key = tplan.name, list(tplan.primary_key)
        col = change_column if change_column in {c.name for c in tplan.columns} else None
        recorded = (marks or {}).get(name)
        if recorded is not None and col and recorded.get("change_column") == col:
            now = probe(engine, tplan, ids, col)
            if now != (recorded["rows"], recorded["pk_digest"], recorded["change_max"]):
                suspects.append(name)
            continue
        current[name] = read_current(engine, tplan, ids)
        if recorded is None and latest.kind != INCREMENTAL:
            # a full version records no marks: its own file gives the digest to compare with
            recorded = {"row_digest": _full_digest(store, latest, tplan)}
        if recorded is None or row_digest(current[name], key) != recorded["row_digest"]:
            suspects.append(name)
    return suspects, current


def _checked_diff(tplan: TablePlan, base: pa.Table, current: pa.Table, where: str) -> TableDiff:
    """The changes from `base` to the `current` rows of one table, checked to rebuild exactly
    the rows read before anything is written. Raises _NeedsFull when the table cannot be
    diffed."""
    schema = tplan.arrow_schema()
    now = conform(current, schema)
    try:
        d = diff_table(conform(base, schema), now, tplan.primary_key)
    except BackupError as exc:
        raise _NeedsFull(f"table {tplan.name}: {exc}") from exc
    # the diff must rebuild exactly the rows read: checked before anything is written
    rebuilt = apply_changes(
        conform(base, schema),
        d.upserts,
        d.deleted,
        tplan.primary_key,
        changed_rows=d.changed,
        where=where,
    )
    off = differences(sort_by_key(now, list(tplan.primary_key)), rebuilt, tplan.primary_key)
    if off:
        raise BackupError(f"table {tplan.name}: the diff does not rebuild the rows: {off[0]}")
    return d


def _record_incremental(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    rtype: ResolvedType,
    chain: list[BackupRecord],
    diffs: dict[str, TableDiff],
    current: dict[str, pa.Table],
    *,
    uid: str | None,
    run_id: str,
    change_column: str | None,
    delta: str = INCREMENTAL,
) -> VersionOutcome:
    full, latest = chain[0].manifest, chain[-1].manifest
    type_name, rid = latest.type, latest.relation_id
    created = dt.datetime.now(dt.UTC).isoformat()
    with engine.connect() as conn:
        first_free = catalog.next_versions(conn, type_name, [rid])[rid]
    version = store.reserve_version(type_name, rid, first_free)
    location = SnapshotStore.backup_dir(type_name, rid, version)
    tables: list[TableManifest] = []
    marks: dict[str, dict] = {}
    for tplan in rtype.tables:
        name, key = tplan.name, list(tplan.primary_key)
        if name in current:
            marks[name] = table_marks(
                conform(current[name], tplan.arrow_schema()), tplan, change_column
            )
        else:  # unchanged by its change column: its marks carry over
            marks[name] = dict(latest.state_marks[name])
        d = diffs.get(name)
        if d is None:
            continue
        upserts = conform(d.upserts, tplan.arrow_schema())
        written = _write(store, f"{location}/{tplan.rule.slug}.parquet", upserts)
        gone = None
        if d.deleted.num_rows:
            gone = _write(store, f"{location}/{tplan.rule.slug}{DELETED_SUFFIX}", d.deleted)
        tables.append(
            TableManifest(
                table=name,
                file=f"{tplan.rule.slug}.parquet",
                rows=written.rows,
                bytes=written.size,
                sha256=written.sha256,
                key=tplan.rule.key,
                parent=tplan.parent.name if tplan.parent else None,
                primary_key=key,
                pk_digest=pk_digest(upserts.select(key)),
                columns=_columns_doc(tplan),
                files=_file_refs(tplan, upserts),
                encrypted=getattr(written, "key_id", None) is not None,
                key_id=getattr(written, "key_id", None),
                added_rows=d.added,
                changed_rows=d.changed,
                deleted_rows=d.deleted.num_rows,
                deleted_file=f"{tplan.rule.slug}{DELETED_SUFFIX}" if gone else None,
                deleted_bytes=gone.size if gone else 0,
                deleted_sha256=gone.sha256 if gone else None,
                deleted_key_id=getattr(gone, "key_id", None) if gone else None,
            )
        )
    encryption = store.encryption_info() if hasattr(store, "encryption_info") else None
    manifest = Manifest(
        type=type_name,
        relation_id=rid,
        version=version,
        location=location,
        snapshot_uri=store.uri,
        uid=uid,
        run_id=run_id,
        registry_file=registry.path,
        registry_sha256=rtype.btype.digest(),
        created_at=created,
        finished_at=dt.datetime.now(dt.UTC).isoformat(),
        compression=f"zstd({store.zstd_level})",
        tables=tables,
        kind=INCREMENTAL,
        encryption=encryption,
        base_version=latest.version,
        state_marks=marks,
        delta=delta,
    )
    text = manifest.to_json()
    store.write_bytes(f"{location}/{MANIFEST_FILE}", text.encode())
    store.sync_dirs(location)  # files and folders durable before the catalog row
    added = {t.table: t.added_rows for t in tables if t.added_rows}
    changed = {t.table: t.changed_rows for t in tables if t.changed_rows}
    deleted = {t.table: t.deleted_rows for t in tables if t.deleted_rows}
    size = sum(t.bytes + t.deleted_bytes for t in tables)
    with engine.begin() as conn:
        backup_id = catalog.insert_backup(conn, manifest, text)
        catalog.log_operation(
            conn,
            action="incremental_backup",
            uid=uid,
            type_name=type_name,
            relation_ids=[rid],
            backup_ids=[backup_id],
            counts={
                t.table: {
                    "added": t.added_rows,
                    "changed": t.changed_rows,
                    "deleted": t.deleted_rows,
                }
                for t in tables
            },
            run_id=run_id,
            message=f"version {version} on top of version {latest.version}: rows added "
            f"{sum(added.values())}, changed {sum(changed.values())}, deleted "
            f"{sum(deleted.values())}; {size} bytes (full version {full.version}: "
            f"{full.total_bytes} bytes)",
        )
    return VersionOutcome(
        rid,
        INCREMENTAL,
        version=version,
        backup_id=backup_id,
        base_version=latest.version,
        added=added,
        changed=changed,
        deleted=deleted,
        bytes=size,
        full_bytes=full.total_bytes,
        location=location,
        rows={t.table: t.rows + t.deleted_rows for t in tables},
        delta=delta,
    )


def full_version(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    type_name: str,
    rid: str,
    reason: str,
    *,
    uid: str | None,
    run_id: str,
) -> VersionOutcome:
    """A full version of a live session: the backup path, source rows kept."""
    [r] = backup_sessions(
        engine,
        registry,
        store,
        type_name=type_name,
        relation_ids=[rid],
        uid=uid,
        run_id=run_id,
        keep_source=True,
    )
    return VersionOutcome(
        rid,
        "full",
        version=r.version,
        backup_id=r.backup_id,
        bytes=r.bytes,
        full_bytes=r.bytes,
        reason=reason,
        location=r.location,
        rows=dict(r.rows),
    )


def protective_backup(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    *,
    type_name: str,
    relation_ids: list,
    uid: str | None,
    run_id: str,
    max_sessions: int = DEFAULT_MAX_SESSIONS,
    change_column: str | None = None,
    max_chain: int = DEFAULT_MAX_CHAIN,
    differential: bool = False,
) -> list[VersionOutcome]:
    """A new version of each session (relation_ids; empty: every session of the type that
    changed since its last version, or has none, at most `max_sessions` new versions). The
    source rows stay. A session whose version could not be made is reported "failed"."""
    rtype = resolve_type(engine, registry.get(type_name), registry.path)
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        latest = _latest_versions(conn, type_name)
    explicit = bool(relation_ids)
    if explicit:
        ids = coerce_ids(rtype, relation_ids)
        rel_ids = list(dict.fromkeys(str(i) for i in ids))
        found = existing_ids(engine, rtype, ids)
        missing = [r for r in rel_ids if r not in found]
        if missing:
            raise BackupError(
                f"unknown relation id(s) {', '.join(missing)} for type {type_name!r}: "
                f"no row in {rtype.root.name}.{rtype.root.rule.key}"
            )
    else:
        rel_ids = _candidates(engine, rtype, latest)
    outcomes: list[VersionOutcome] = []
    fulls: list[tuple[str, str]] = []
    made = 0
    for rid in rel_ids:
        if not explicit and made >= max_sessions:
            break
        if rid not in latest:
            fulls.append((rid, "no version yet"))
            made += 1
            continue
        try:
            outcome = _incremental(
                engine,
                registry,
                store,
                rtype,
                latest[rid],
                uid=uid,
                run_id=run_id,
                change_column=change_column,
                max_chain=max_chain,
                differential=differential,
            )
        except _NeedsFull as need:
            fulls.append((rid, need.reason))
            made += 1
            continue
        except Exception as exc:  # noqa: BLE001 - reported per session, the others go on
            outcomes.append(VersionOutcome(rid, "failed", reason=str(exc)))
            catalog.log_operation_now(
                engine,
                action="incremental_backup",
                status="failed",
                uid=uid,
                type_name=type_name,
                relation_ids=[rid],
                run_id=run_id,
                message=str(exc),
            )
            continue
        outcomes.append(outcome)
        if outcome.status != "unchanged":
            made += 1
    for rid, reason in fulls:  # one at a time: a session gone meanwhile fails alone
        try:
            outcomes.append(
                full_version(
                    engine, registry, store, type_name, rid, reason, uid=uid, run_id=run_id
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported per session
            outcomes.append(VersionOutcome(rid, "failed", reason=str(exc)))
    order = {r: i for i, r in enumerate(rel_ids)}
    return sorted(outcomes, key=lambda o: order.get(o.relation_id, len(order)))
