"""Chains of versions and their composition, free of Dagster.

`compose`: a full version + its incrementals (or a differential) applied in order = the
session's rows at that version; a missing or damaged link is refused naming the version.
`list_versions` lists a session's versions as the CLI and the read service show them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pyarrow as pa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines.dialects.arrow_rows import sort_by_key
from htd_pipelines.registry.resolved import ResolvedType
from htd_pipelines.restore import check_schema, load_snapshot, read_snapshot_table
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import BackupRecord
from htd_pipelines.store.manifest import Manifest, TableManifest
from htd_pipelines.store.snapshots import SnapshotError, SnapshotStore
from htd_pipelines.versions.diff import ChainError, apply_changes

DELETED_SUFFIX = ".deleted.parquet"

INCREMENTAL = "incremental"


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


def schema_problems(full: Manifest, rtype: ResolvedType, state: dict | None = None) -> list[str]:
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
