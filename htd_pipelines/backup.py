"""The backup itself, free of Dagster: plan, extract one table, record, delete what was captured.

The Dagster ops in `htd_pipelines.jobs.backup` are thin wrappers around these functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from htd_pipelines.dialects import read
from htd_pipelines.dialects.read import prefetch, stream_batches
from htd_pipelines.markers import claim_markers
from htd_pipelines.registry.arrow_types import value_bytes
from htd_pipelines.registry.relation_ids import RelationIdError, check_text, parse_int_id
from htd_pipelines.registry.resolved import REL_COLUMN, ResolvedType, TablePlan, resolve_cached
from htd_pipelines.registry.spec import Registry
from htd_pipelines.store import catalog, session_claims
from htd_pipelines.store.manifest import MANIFEST_FILE, Manifest, TableManifest
from htd_pipelines.store.snapshots import SnapshotStore, WrittenFile


class BackupError(RuntimeError):
    """The backup cannot go ahead; the message names the id, table or file at fault."""


@dataclass(frozen=True)
class BackupPlan:
    """What one run backs up; passed from op to op (plain data, picklable)."""

    type: str
    relation_ids: tuple[str, ...]
    versions: dict[str, int]
    uid: str | None
    keep_source: bool
    run_id: str
    registry_file: str
    registry_sha256: str
    snapshot_uri: str
    created_at: str
    from_markers: bool = False
    # sessions left out, with the reason; `problems` make the run fail once the rest is done
    skipped: tuple[tuple[str, str], ...] = ()
    problems: tuple[tuple[str, str], ...] = ()
    # how every table is read as one state of the database (dialects/read.py); None: not held
    consistency: str | None = None

    def location(self, relation_id: str) -> str:
        return SnapshotStore.backup_dir(self.type, relation_id, self.versions[relation_id])


@dataclass(frozen=True)
class TableExtract:
    """One op's result: the table's snapshot file per relation id (empty if not in the type)."""

    table: str
    per_relation: dict[str, TableManifest] = field(default_factory=dict)
    consistent: bool = False  # read from the run's read snapshot

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.per_relation.values())


@dataclass(frozen=True)
class RecordedBackup:
    backup_id: int
    relation_id: str
    version: int
    location: str
    rows: dict[str, int]
    bytes: int


def resolved(engine: Engine, registry: Registry, type_name: str, scope: str) -> ResolvedType:
    return resolve_cached(engine, registry.get(type_name), registry.path, scope)


def coerce_ids(plan: ResolvedType, relation_ids: list) -> list:
    """Relation ids as values of the root key's type; a malformed id is a clear error."""
    root = plan.root
    column = root.table.c[root.rule.key]
    where = f"{root.name}.{root.rule.key}"
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = str
    out = []
    for rid in relation_ids:
        try:
            check_text(str(rid), where)
            if python_type is int:  # only the canonical decimal text: never another session
                unsigned = bool(getattr(column.type, "unsigned", False))
                out.append(parse_int_id(rid, where, unsigned=unsigned))
            else:
                out.append(str(rid) if python_type is str else rid)
        except RelationIdError as exc:
            raise BackupError(str(exc)) from None
    return out


def existing_ids(engine: Engine, plan: ResolvedType, ids: list) -> set[str]:
    if not ids:
        return set()
    root = plan.root
    key = root.table.c[root.rule.key]
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(key).where(key.in_(sa.bindparam("ids", expanding=True))), {"ids": ids}
        ).scalars()
        return {str(v) for v in found}


def plan_backup(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    *,
    type_name: str,
    relation_ids: list,
    uid: str | None,
    keep_source: bool,
    run_id: str,
    from_markers: bool = False,
    run_status: Callable[[str], str | None] | None = None,
    max_attempts: int = 3,
) -> BackupPlan:
    """Check and reserve. With `from_markers` (runs launched by deletion_marker_sensor) each
    session's deletion marker is claimed first; sessions that are gone, already backed up or
    being backed up by another run are left out (and reported) instead of failing the batch."""
    if not relation_ids:
        raise BackupError("no relation ids given: name at least one session to back up")
    rtype = resolved(engine, registry, type_name, run_id)
    ids = coerce_ids(rtype, relation_ids)
    rel_ids = list(dict.fromkeys(str(i) for i in ids))
    claimed, busy = session_claims.claim(
        engine, type_name, rel_ids, run_id, "backup", run_status=run_status
    )
    if busy and not from_markers:
        session_claims.release(engine, type_name, claimed, run_id)
        raise BackupError("; ".join(busy.values()) + "; nothing was backed up")
    try:
        return _plan_claimed(
            engine, store, rtype, [i for i in ids if str(i) in claimed], uid=uid,
            keep_source=keep_source, run_id=run_id, from_markers=from_markers,
            run_status=run_status, max_attempts=max_attempts, registry=registry,
            busy=list(busy.items()),
        )  # fmt: skip
    except BaseException:
        session_claims.release(engine, type_name, claimed, run_id)
        raise


def _plan_claimed(
    engine: Engine,
    store: SnapshotStore,
    rtype: ResolvedType,
    ids: list,
    *,
    uid: str | None,
    keep_source: bool,
    run_id: str,
    from_markers: bool,
    run_status: Callable[[str], str | None] | None,
    max_attempts: int,
    registry: Registry,
    busy: list[tuple[str, str]],
) -> BackupPlan:
    """plan_backup once the sessions are claimed (`busy`: marked sessions another run holds,
    left out)."""
    type_name = rtype.btype.name
    rel_ids = [str(i) for i in ids]
    skipped: list[tuple[str, str]] = list(busy)
    problems: list[tuple[str, str]] = []
    for rid, reason in busy:
        catalog.log_operation_now(
            engine, action="marker_skipped", status="skipped", uid=uid, type_name=type_name,
            relation_ids=[rid], run_id=run_id, message=reason,
        )  # fmt: skip
    if from_markers:
        outcome = claim_markers(
            engine,
            rtype,
            ids,
            run_id=run_id,
            run_status=run_status or (lambda _run_id: None),
            max_attempts=max_attempts,
            sessions_held=True,  # claimed above: no other run is working on these sessions
        )
        skipped, problems = skipped + outcome.skipped, outcome.problems
        left_out = [rid for rid, _ in [*outcome.skipped, *outcome.problems]]
        session_claims.release(engine, type_name, left_out, run_id)
        for rid, reason in [*outcome.skipped, *outcome.problems]:
            catalog.log_operation_now(
                engine,
                action="marker_skipped",
                status="skipped",
                uid=uid,
                type_name=type_name,
                relation_ids=[rid],
                run_id=run_id,
                message=reason,
            )
        rel_ids = outcome.claimed
        ids = coerce_ids(rtype, rel_ids)
    found = existing_ids(engine, rtype, ids)
    missing = [r for r in rel_ids if r not in found]
    if missing:
        raise BackupError(
            f"unknown relation id(s) {', '.join(missing)} for type {type_name!r}: "
            f"no row in {rtype.root.name}.{rtype.root.rule.key}"
        )
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        first_free = catalog.next_versions(conn, type_name, rel_ids)
    versions = {r: store.reserve_version(type_name, r, first_free[r]) for r in rel_ids}
    return BackupPlan(
        type=type_name,
        relation_ids=tuple(rel_ids),
        versions=versions,
        uid=uid,
        keep_source=keep_source,
        run_id=run_id,
        registry_file=registry.path,
        registry_sha256=rtype.btype.digest(),
        snapshot_uri=store.uri,
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        from_markers=from_markers,
        skipped=tuple(skipped),
        problems=tuple(problems),
        consistency=read.open_snapshot(engine, run_id) if rel_ids else None,
    )


def pk_digest(keys: pa.Table) -> str:
    """Order-independent digest of a set of primary keys.

    Keys are sorted, rendered as text (columns joined by U+001F) and hashed as Arrow buffers:
    the value lengths, then the concatenated bytes. Vectorized: ~50 ms per million keys.
    """
    h = hashlib.sha256()
    if keys.num_rows:
        keys = keys.sort_by([(c, "ascending") for c in keys.column_names])
        cols = [pc.cast(keys[c], pa.string()) for c in keys.column_names]
        text = pc.binary_join_element_wise(*cols, "\x1f") if len(cols) > 1 else cols[0]
        text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
        offsets, data = value_bytes(text)
        h.update(np.diff(offsets).astype("<i4").tobytes())
        h.update(data)
    return h.hexdigest()


def file_reference(column: str, key: list[str], found: pa.Table) -> dict:
    """The manifest's entry for one remote-file column: the rows' keys and urls side by side
    (`found`: the rows whose `column` holds a url)."""
    key_lists = [found.column(c).to_pylist() for c in key]
    return {
        "column": column,
        "key_columns": key,
        "keys": key_lists[0] if len(key) == 1 else [list(k) for k in zip(*key_lists, strict=True)],
        "urls": found.column(column).to_pylist(),
    }


class _Capture:
    """Per-relation accumulation while one table streams: writer, keys, remote-file refs."""

    def __init__(
        self, store: SnapshotStore, path: str, schema: pa.Schema, plan: TablePlan
    ) -> None:
        self.writer = store.parquet_writer(path, schema)
        self.schema = schema
        self.plan = plan
        self.keys: list[pa.Table] = []
        self.files: list[dict] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.writer.write(batch)
        pk = list(self.plan.primary_key)
        # copies: a zero-copy view of the key columns would keep the driver's whole batch alive
        keys = batch.select(pk)
        self.keys.append(
            pa.RecordBatch.from_arrays(
                [pa.concat_arrays([c, c.slice(0, 0)]) for c in keys.columns], schema=keys.schema
            )
        )
        for col in self.plan.rule.files:
            refs = batch.select([*pk, col]).filter(pc.is_valid(batch.column(col)))
            if refs.num_rows:
                self.files.append((col, refs))

    def finish(self) -> tuple[WrittenFile, str, list[dict]]:
        written = self.writer.close()
        pk = list(self.plan.primary_key)
        key_schema = pa.schema([self.schema.field(c) for c in pk])
        keys = pa.Table.from_batches(self.keys, schema=key_schema)
        refs = []  # columnar: one entry per file column, keys and urls side by side
        for col in self.plan.rule.files:
            parts = [b for c, b in self.files if c == col]
            if not parts:
                continue
            refs.append(file_reference(col, pk, pa.Table.from_batches(parts)))
        return written, pk_digest(keys), refs


def extract_table(
    engine: Engine, registry: Registry, store: SnapshotStore, plan: BackupPlan, table: str
) -> TableExtract:
    """Stream the table's rows of every relation id in the plan into one Parquet file each."""
    if engine.dialect.name != "sqlite":  # there the read snapshot holds the writers off
        session_claims.refresh(engine, plan.type, plan.relation_ids, plan.run_id)
    btype = registry.get(plan.type)
    if btype.rule(table) is None or not plan.relation_ids:
        return TableExtract(table)
    tplan = resolved(engine, registry, plan.type, plan.run_id).table(table)
    schema = tplan.arrow_schema()
    ids = coerce_ids(resolved(engine, registry, plan.type, plan.run_id), list(plan.relation_ids))
    path = {r: f"{plan.location(r)}/{tplan.rule.slug}.parquet" for r in plan.relation_ids}
    captures: dict[str, _Capture] = {}

    def capture(rid: str) -> _Capture:
        if rid not in captures:
            captures[rid] = _Capture(store, path[rid], schema, tplan)
        return captures[rid]

    snapshot = read.snapshot_of(plan.run_id)
    for batch in prefetch(stream_batches(engine, tplan, ids, snapshot=snapshot)):
        rel = batch.column(REL_COLUMN)
        data = batch.select(schema.names)
        if len(plan.relation_ids) == 1:
            capture(plan.relation_ids[0]).add(data)
            continue
        for value in pc.unique(rel).to_pylist():
            capture(str(value)).add(data.filter(pc.equal(rel, value)))
    out: dict[str, TableManifest] = {}
    for rid in plan.relation_ids:
        written, digest, files = capture(rid).finish()
        out[rid] = TableManifest(
            table=table,
            file=path[rid].rsplit("/", 1)[-1],
            rows=written.rows,
            bytes=written.size,
            sha256=written.sha256,
            key=tplan.rule.key,
            parent=tplan.parent.name if tplan.parent else None,
            primary_key=list(tplan.primary_key),
            pk_digest=digest,
            columns=[
                {
                    "name": c.name,
                    "arrow_type": str(c.arrow),
                    "sql_type": c.sql_type,
                    "nullable": c.nullable,
                    "kind": c.kind,
                }
                for c in tplan.columns
            ],
            files=files,
            encrypted=written.key_id is not None,
            key_id=written.key_id,
        )
    return TableExtract(table, out, consistent=snapshot is not None)


def record_backup(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    plan: BackupPlan,
    extracts: list[TableExtract],
) -> list[RecordedBackup]:
    """Write each session's manifest, then its catalog row; all catalog rows in one transaction.
    Without a delete to follow (keep_source) or when it fails, the sessions are released."""
    read.close_snapshot(plan.run_id)  # every table is read; and SQLite's writers wait for it
    try:
        recorded = _record(engine, registry, store, plan, extracts)
    except BaseException:
        release_sessions(engine, plan)
        raise
    if plan.keep_source:
        release_sessions(engine, plan)
    return recorded


def release_sessions(engine: Engine, plan: BackupPlan) -> None:
    """The run's read snapshot closed and its claims on its sessions released (the backup is
    over, done or not)."""
    read.close_snapshot(plan.run_id)
    session_claims.release(engine, plan.type, plan.relation_ids, plan.run_id)


def _record(
    engine: Engine,
    registry: Registry,
    store: SnapshotStore,
    plan: BackupPlan,
    extracts: list[TableExtract],
) -> list[RecordedBackup]:
    if not plan.relation_ids:
        return []
    order = [t.name for t in resolved(engine, registry, plan.type, plan.run_id).tables]
    by_table = {e.table: e for e in extracts if e.per_relation}
    missing = [t for t in order if t not in by_table]
    if missing:
        raise BackupError(f"no snapshot was extracted for table(s) {', '.join(missing)}")
    root = resolved(engine, registry, plan.type, plan.run_id).root.name
    gone = [r for r in plan.relation_ids if by_table[root].per_relation[r].rows == 0]
    if gone:  # deleted (by someone else) between the plan and the extract: not a backup
        raise BackupError(
            f"session(s) {', '.join(gone)} of type {plan.type!r} disappeared during the backup "
            f"(no row left in {root}); nothing was recorded"
        )
    finished = dt.datetime.now(dt.UTC).isoformat()
    # one state of the database only when every table was read from the run's snapshot
    held = all(by_table[t].consistent for t in order)
    consistency = plan.consistency if held else "each table in a transaction of its own"
    manifests: list[tuple[Manifest, str]] = []
    for rid in plan.relation_ids:
        manifest = Manifest(
            type=plan.type,
            relation_id=rid,
            version=plan.versions[rid],
            location=plan.location(rid),
            snapshot_uri=plan.snapshot_uri,
            uid=plan.uid,
            run_id=plan.run_id,
            registry_file=plan.registry_file,
            registry_sha256=plan.registry_sha256,
            created_at=plan.created_at,
            finished_at=finished,
            compression=f"zstd({store.zstd_level})",
            tables=[by_table[t].per_relation[rid] for t in order],
            encryption=store.encryption_info(),
            consistency=consistency,
        )
        text = manifest.to_json()  # once: the file and the catalog row hold the same text
        store.write_bytes(f"{manifest.location}/{MANIFEST_FILE}", text.encode())
        store.sync_dirs(manifest.location)  # files and folders durable before the catalog row
        manifests.append((manifest, text))
    recorded = []
    with engine.begin() as conn:
        for m, text in manifests:
            backup_id = catalog.insert_backup(conn, m, text)
            recorded.append(
                RecordedBackup(
                    backup_id=backup_id,
                    relation_id=m.relation_id,
                    version=m.version,
                    location=m.location,
                    rows={t.table: t.rows for t in m.tables},
                    bytes=m.total_bytes,
                )
            )
        catalog.log_operation(
            conn,
            action="backup",
            uid=plan.uid,
            type_name=plan.type,
            relation_ids=list(plan.relation_ids),
            backup_ids=[r.backup_id for r in recorded],
            counts={t: sum(r.rows[t] for r in recorded) for t in order},
            run_id=plan.run_id,
        )
    return recorded
