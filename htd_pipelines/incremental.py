"""Incremental versions of live sessions, free of Dagster.

- `protective_backup`: a new version of each session that still exists. A session without a
  version gets a full one (the backup path with keep_source); otherwise an *incremental* one on
  top of its latest version: the session's rows now, diffed by primary key against the latest
  version's state (full + chain of incrementals) -> per changed table a Parquet file of the
  added and changed rows (whole rows) and one of the deleted keys, a manifest (kind
  "incremental", base_version, counts, sha256 per file) and a `back_up` row. Nothing changed:
  no version ("unchanged").
- `compose`: full + incrementals applied in order = the session's rows at that version; a
  missing or damaged link is refused naming the version.
- `restore_version`: back up the current state (a new version), then in one transaction delete
  the session's rows (children first), insert the composed rows of the version (parents first),
  read them back and compare value for value; anything off rolls everything back.

Change detection per table: where the table has the change-tracking column (HTD_CHANGE_COLUMN,
e.g. updated_at), its primary keys and max(column) are compared with the latest version's
recorded marks (rows, key digest, max) without reading whole rows; elsewhere the rows are read
and their digest compared with the recorded row digest. A table that differs is diffed exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines import catalog, settings
from htd_pipelines.arrow_types import value_bytes
from htd_pipelines.backup import (
    BackupError,
    backup_sessions,
    coerce_ids,
    existing_ids,
    file_reference,
    pk_digest,
)
from htd_pipelines.catalog import BackupRecord
from htd_pipelines.extract import rows_to_batch, stream_batches
from htd_pipelines.load import differences, insert_rows, read_rows, sort_by_key
from htd_pipelines.manifest import MANIFEST_FILE, Manifest, TableManifest
from htd_pipelines.plan import ResolvedType, TablePlan, resolve_type
from htd_pipelines.registry import Registry
from htd_pipelines.restore import (
    RestoreRefused,
    _verify_rows,
    check_schema,
    find_conflicts,
    find_missing_parents,
    load_snapshot,
    read_snapshot_table,
)
from htd_pipelines.snapshots import SnapshotError, SnapshotStore, WrittenFile

CHANGE_COLUMN_ENV = "HTD_CHANGE_COLUMN"
DEFAULT_MAX_SESSIONS = 100
DEFAULT_MAX_CHAIN = 30  # incrementals on top of one full version; then a new full version
DELETED_SUFFIX = ".deleted.parquet"
INCREMENTAL = "incremental"


class ChainError(SnapshotError):
    """A version cannot be composed: a link of its chain is missing from the catalog, its files
    are missing or damaged, or it does not apply to its base. The message names the version."""


class _NeedsFull(Exception):  # noqa: N818 - control flow: make a full version instead
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def change_column_from_env() -> str | None:
    """HTD_CHANGE_COLUMN: the change-tracking column (e.g. updated_at); unset: none."""
    return (os.environ.get(CHANGE_COLUMN_ENV) or "").strip() or None


# -- digests and marks ---------------------------------------------------------------------------


def _column_bytes(col: pa.Array) -> pa.Array:
    """A column as large_binary, one value per row, in a form that identifies the value."""
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pc.cast(col, pa.large_binary())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.cast(col, pa.large_binary())
    try:
        return pc.cast(pc.cast(col, pa.large_string()), pa.large_binary())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        values = [None if v is None else repr(v).encode() for v in col.to_pylist()]
        return pa.array(values, pa.large_binary())


def row_digest(table: pa.Table, key: Sequence[str]) -> str:
    """Order-independent digest of a table's rows (every column, NULLs distinct from empty)."""
    h = hashlib.sha256()
    h.update(json.dumps([[f.name, str(f.type)] for f in table.schema]).encode())
    table = sort_by_key(table, list(key))
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        h.update(b"\x1e" + name.encode())
        if not len(col):
            continue
        data = _column_bytes(col)
        h.update(pc.is_valid(data).to_numpy(zero_copy_only=False).tobytes())
        data = pc.fill_null(data, pa.scalar(b"", pa.large_binary()))
        if isinstance(data, pa.ChunkedArray):
            data = data.combine_chunks()
        offsets, values = value_bytes(data)
        h.update(np.diff(offsets).astype("<i8").tobytes())
        h.update(values)
    return h.hexdigest()


def _max_text(col: pa.ChunkedArray | pa.Array) -> str | None:
    if len(col) == 0:
        return None
    value = pc.max(col).as_py()
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)


def table_marks(table: pa.Table, tplan: TablePlan, change_column: str | None) -> dict:
    """What the next protective backup compares with: rows, digests, max(change column)."""
    key = list(tplan.primary_key)
    col = change_column if change_column in table.column_names else None
    return {
        "rows": table.num_rows,
        "row_digest": row_digest(table, key),
        "pk_digest": pk_digest(table.select(key)),
        "change_column": col,
        "change_max": _max_text(table.column(col)) if col else None,
    }


def _probe(engine: Engine, tplan: TablePlan, ids: list, column: str) -> tuple:
    """(rows, key digest, max(column)) of the session's rows now, reading keys and column only."""
    key = list(tplan.primary_key)
    names = list(dict.fromkeys([*key, column]))
    sub = tplan.select_rows().subquery()
    schema = pa.schema([tplan.arrow_schema().field(c) for c in names])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*[sub.c[c] for c in names]), {"ids": ids}).all()
    table = pa.Table.from_batches([rows_to_batch(rows, schema)], schema=schema)
    return table.num_rows, pk_digest(table.select(key)), _max_text(table.column(column))


# -- reading and diffing -------------------------------------------------------------------------


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns and types (no schema metadata)."""
    arrays = []
    for f in schema:
        col = table.column(f.name)
        arrays.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema.remove_metadata())


def read_current(engine: Engine, tplan: TablePlan, ids: list) -> pa.Table:
    """The session's rows of one table now (the extract path), in snapshot schema."""
    schema = tplan.arrow_schema()
    batches = [b.select(schema.names) for b in stream_batches(engine, tplan, ids)]
    return pa.Table.from_batches(batches, schema=schema)


def _keys(table: pa.Table, key: list[str]) -> list[tuple]:
    return list(zip(*[table.column(c).to_pylist() for c in key], strict=True))


def _member(table: pa.Table, key: list[str], other: pa.Table) -> np.ndarray:
    """Per row of `table`: is its key among `other`'s keys?"""
    if table.num_rows == 0:
        return np.zeros(0, dtype=bool)
    if other.num_rows == 0:
        return np.zeros(table.num_rows, dtype=bool)
    if len(key) == 1:
        values = other.column(key[0]).combine_chunks()
        values = values.cast(table.column(key[0]).type)
        hits = pc.is_in(table.column(key[0]), value_set=values)
        return hits.to_numpy(zero_copy_only=False).astype(bool)
    wanted = set(_keys(other, key))
    return np.array([k in wanted for k in _keys(table, key)], dtype=bool)


def _unique_keys(table: pa.Table, key: list[str]) -> bool:
    if len(key) == 1:
        return pc.count_distinct(table.column(key[0])).as_py() == table.num_rows
    return len(set(_keys(table, key))) == table.num_rows


def _differs(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    same = pc.fill_null(pc.equal(a, b), False)
    same = pc.or_(same, pc.and_(pc.is_null(a), pc.is_null(b)))
    if pa.types.is_floating(a.type):
        same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return ~same.to_numpy(zero_copy_only=False).astype(bool)


@dataclass
class TableDiff:
    upserts: pa.Table  # added and changed rows, whole rows
    deleted: pa.Table  # primary keys of the deleted rows
    added: int
    changed: int

    @property
    def empty(self) -> bool:
        return self.upserts.num_rows == 0 and self.deleted.num_rows == 0


def diff_table(base: pa.Table, current: pa.Table, key: Sequence[str]) -> TableDiff:
    """Rows added, rows changed (any column), keys deleted: `base` -> `current` (same schema)."""
    key = list(key)
    for name, t in (("the base version", base), ("the current rows", current)):
        if not _unique_keys(t, key):
            raise BackupError(f"duplicate primary keys ({', '.join(key)}) in {name}")
    in_base = _member(current, key, base)
    in_current = _member(base, key, current)
    added = current.filter(pa.array(~in_base))
    deleted = base.filter(pa.array(~in_current)).select(key)
    cur = sort_by_key(current.filter(pa.array(in_base)), key)
    old = sort_by_key(base.filter(pa.array(in_current)), key)
    mask = np.zeros(cur.num_rows, dtype=bool)
    for name in cur.column_names:
        a, b = cur.column(name), old.column(name)
        if not a.equals(b):
            mask |= _differs(a, b)
    changed = cur.filter(pa.array(mask))
    upserts = pa.concat_tables([added, changed]) if changed.num_rows else added
    return TableDiff(upserts, deleted, added.num_rows, changed.num_rows)


def apply_changes(
    state: pa.Table,
    upserts: pa.Table,
    deleted: pa.Table,
    key: Sequence[str],
    *,
    changed_rows: int,
    where: str,
) -> pa.Table:
    """`state` with the deleted keys removed and the upserts put in (replacing changed rows).
    The counts must match the base exactly: every deleted and changed key was there, no added
    one was; else ChainError naming `where`."""
    key = list(key)
    upserts = conform(upserts, state.schema)
    hit_deleted = _member(state, key, deleted)
    hit_upserts = _member(state, key, upserts)
    if int(hit_deleted.sum()) != deleted.num_rows or int(hit_upserts.sum()) != changed_rows:
        raise ChainError(
            f"{where} does not apply to its base: {int(hit_deleted.sum())} of "
            f"{deleted.num_rows} deleted keys and {int(hit_upserts.sum())} of {changed_rows} "
            "changed rows found there"
        )
    kept = state.filter(pa.array(~(hit_deleted | hit_upserts)))
    return sort_by_key(pa.concat_tables([kept, upserts]), key)


# -- chains and composition ----------------------------------------------------------------------


def _label(m: Manifest | BackupRecord) -> str:
    return f"version {m.version} of {m.type} {m.relation_id}"


def version_chain(
    conn: Connection, type_name: str, relation_id: object, version: int
) -> list[BackupRecord]:
    """The catalog rows of a version's chain, full version first (base_version links)."""
    rid = str(relation_id)
    found = catalog.find_backups(conn, type_name=type_name, relation_id=rid)
    by_version = {r.version: r for r in found}
    chain: list[BackupRecord] = []
    wanted, child = version, None
    while True:
        record = by_version.get(wanted)
        if record is None:
            what = f" (the base of version {child})" if child is not None else ""
            raise ChainError(
                f"version {wanted} of {type_name} {rid}{what} is not in the catalog"
                + (f"; version {version} cannot be composed" if child is not None else "")
            )
        try:
            manifest = record.manifest
        except (ValueError, TypeError, KeyError) as exc:
            raise ChainError(f"{_label(record)}: its manifest is unreadable ({exc})") from exc
        chain.append(record)
        if manifest.kind != INCREMENTAL:
            break
        base = manifest.base_version
        if base is None or base >= wanted:
            raise ChainError(f"{_label(record)}: incremental with no valid base ({base})")
        child, wanted = wanted, base
    return chain[::-1]


def _deleted_view(m: Manifest) -> Manifest:
    """The manifest of an incremental's deleted-key files, so load_snapshot checks them."""
    tables = []
    for t in m.tables:
        if not t.deleted_file:
            continue
        by_name = {c["name"]: c for c in t.columns}
        tables.append(
            TableManifest(
                table=t.table,
                file=t.deleted_file,
                rows=t.deleted_rows,
                bytes=t.deleted_bytes,
                sha256=t.deleted_sha256 or "",
                key=t.key,
                parent=t.parent,
                primary_key=list(t.primary_key),
                pk_digest="",
                columns=[by_name[c] for c in t.primary_key],
                encrypted=t.deleted_key_id is not None,
                key_id=t.deleted_key_id,
            )
        )
    return dataclasses.replace(m, tables=tables)


def _load(store: SnapshotStore, m: Manifest, what: str = "") -> dict[str, pa.Table]:
    try:
        return load_snapshot(store, m)
    except SnapshotError as exc:
        raise ChainError(f"{_label(m)}{what} is damaged: {exc}") from exc


def check_files(store: SnapshotStore, manifest: Manifest) -> None:
    """Every file of one version (an incremental's deleted-key files too) against its manifest:
    exists, sha256, size, readable, rows, columns. Raises SnapshotError naming the file.
    Each file is decoded in full (that is what proves it readable) and let go before the next."""
    views = [manifest, _deleted_view(manifest)] if manifest.kind == INCREMENTAL else [manifest]
    for view in views:
        for t in view.tables:
            read_snapshot_table(store, view, t.table)


def compose(
    versions: Sequence[Manifest | BackupRecord], store: SnapshotStore | None = None
) -> dict[str, pa.Table]:
    """The session's rows at the last of `versions` (a full version, then its incrementals in
    order), per table, sorted by primary key. Every file is checked against its manifest
    (load_snapshot); a missing, damaged or mismatched link raises ChainError naming it."""
    manifests = [v.manifest if isinstance(v, BackupRecord) else v for v in versions]
    if not manifests:
        raise ChainError("no versions to compose")
    first = manifests[0]
    if first.kind == INCREMENTAL:
        raise ChainError(f"{_label(first)} is incremental: a chain starts with a full version")
    store = store or SnapshotStore(first.snapshot_uri)
    keys = {t.table: list(t.primary_key) for t in first.tables}
    state = {name: sort_by_key(t, keys[name]) for name, t in _load(store, first).items()}
    state = {name: t.replace_schema_metadata(None) for name, t in state.items()}
    previous = first
    for m in manifests[1:]:
        if m.kind != INCREMENTAL or m.base_version != previous.version:
            raise ChainError(
                f"{_label(m)} does not follow version {previous.version} "
                f"(kind {m.kind}, base {m.base_version})"
            )
        if (m.type, m.relation_id) != (first.type, first.relation_id):
            raise ChainError(f"{_label(m)} belongs to another session than {_label(first)}")
        upserts = _load(store, m)
        deleted = _load(store, _deleted_view(m), " (deleted keys)")
        for t in m.tables:
            if t.table not in state:
                raise ChainError(f"{_label(m)}: table {t.table} is not in version {first.version}")
            empty_keys = state[t.table].select(keys[t.table]).schema.empty_table()
            state[t.table] = apply_changes(
                state[t.table],
                upserts[t.table],
                deleted.get(t.table, empty_keys),
                keys[t.table],
                changed_rows=t.changed_rows,
                where=f"{_label(m)}, table {t.table},",
            )
        previous = m
    return state


def compose_version(
    engine: Engine,
    type_name: str,
    relation_id: object,
    version: int,
    store: SnapshotStore | None = None,
) -> dict[str, pa.Table]:
    """compose() of a recorded version, its chain read from the catalog."""
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        chain = version_chain(conn, type_name, relation_id, version)
    return compose(chain, store)


def _schema_problems(full: Manifest, rtype: ResolvedType, state: dict | None = None) -> list[str]:
    problems = check_schema(full, rtype)
    for tplan in rtype.tables:
        live = [c.name for c in tplan.columns]
        try:
            recorded = [c["name"] for c in full.table(tplan.name).columns]
        except KeyError:
            continue
        if recorded != live:
            problems.append(f"table {tplan.name}: columns {recorded} then, {live} now")
        elif state is not None and state[tplan.name].column_names != live:
            problems.append(f"table {tplan.name}: columns {state[tplan.name].column_names}")
    return list(dict.fromkeys(problems))


# -- protective backups --------------------------------------------------------------------------


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
    problems = _schema_problems(full, rtype)
    if problems:
        raise _NeedsFull(
            f"the registry or the schema changed since version {full.version}: "
            + "; ".join(problems)
        )
    marks = latest.state_marks if latest.kind == INCREMENTAL else None
    current: dict[str, pa.Table] = {}
    suspects: list[str] = []
    for tplan in rtype.tables:
        name, key = tplan.name, list(tplan.primary_key)
        col = change_column if change_column in {c.name for c in tplan.columns} else None
        recorded = (marks or {}).get(name)
        if recorded is not None and col and recorded.get("change_column") == col:
            now = _probe(engine, tplan, ids, col)
            if now != (recorded["rows"], recorded["pk_digest"], recorded["change_max"]):
                suspects.append(name)
            continue
        current[name] = read_current(engine, tplan, ids)
        if recorded is None and latest.kind != INCREMENTAL:
            # a full version records no marks: its own file gives the digest to compare with
            recorded = {"row_digest": _full_digest(store, latest, tplan)}
        if recorded is None or row_digest(current[name], key) != recorded["row_digest"]:
            suspects.append(name)
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
        schema = tplan.arrow_schema()
        if tplan.name not in current:
            current[tplan.name] = read_current(engine, tplan, ids)
        now = conform(current[tplan.name], schema)
        try:
            d = diff_table(conform(base[tplan.name], schema), now, tplan.primary_key)
        except BackupError as exc:
            raise _NeedsFull(f"table {tplan.name}: {exc}") from exc
        # the diff must rebuild exactly the rows read: checked before anything is written
        rebuilt = apply_changes(
            conform(base[tplan.name], schema),
            d.upserts,
            d.deleted,
            tplan.primary_key,
            changed_rows=d.changed,
            where=f"the new version of {type_name} {rid}, table {tplan.name},",
        )
        off = differences(sort_by_key(now, list(tplan.primary_key)), rebuilt, tplan.primary_key)
        if off:
            raise BackupError(f"table {tplan.name}: the diff does not rebuild the rows: {off[0]}")
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


def _full_version(
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
                _full_version(
                    engine, registry, store, type_name, rid, reason, uid=uid, run_id=run_id
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported per session
            outcomes.append(VersionOutcome(rid, "failed", reason=str(exc)))
    order = {r: i for i, r in enumerate(rel_ids)}
    return sorted(outcomes, key=lambda o: order.get(o.relation_id, len(order)))


# -- restoring a live session to a version -------------------------------------------------------


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
    try:
        with engine.connect() as conn:
            chain = version_chain(conn, type_name, rid, version)
        target = compose(chain, store)
    except ChainError as exc:
        raise RestoreRefused(f"{what} cannot be restored: {exc}; nothing was written") from exc
    problems = _schema_problems(chain[0].manifest, rtype, target)
    if problems:
        raise RestoreRefused(
            f"{what} no longer matches the registry or the schema: "
            + "; ".join(problems)
            + "; nothing was written"
        )
    target = {t.name: conform(target[t.name], t.arrow_schema()) for t in rtype.tables}
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
        protective = _full_version(
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
    before = {t.name: conform(before[t.name], t.arrow_schema()) for t in rtype.tables}
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
                fixed = _verify_rows(conn, tplan, target[tplan.name], ids)
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


def list_versions(engine: Engine, type_name: str, relation_id: object) -> list[dict]:
    """Every recorded version of a session, oldest first, with what each one holds."""
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        records = catalog.find_backups(conn, type_name=type_name, relation_id=str(relation_id))
    out = []
    for r in sorted(records, key=lambda r: r.version):
        m = r.manifest
        incremental = m.kind == INCREMENTAL
        out.append(
            {
                "version": r.version,
                "backup_id": r.id,
                "kind": m.kind,
                "base_version": m.base_version,
                "delta": m.delta,
                "rows": sum(t.rows for t in m.tables),
                "added": sum(t.added_rows for t in m.tables) if incremental else None,
                "changed": sum(t.changed_rows for t in m.tables) if incremental else None,
                "deleted": sum(t.deleted_rows for t in m.tables) if incremental else None,
                "bytes": sum(t.bytes + t.deleted_bytes for t in m.tables),
                "tables": [t.table for t in m.tables] if incremental else None,
                "uid": r.uid,
                "source_deleted": r.source_deleted,
                "is_reback": r.is_reback,
                "created_at": r.created_at.isoformat() if r.created_at else None,
            }
        )
    return out
