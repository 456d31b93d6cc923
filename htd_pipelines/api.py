"""The read API for the platform task centers: find backups and load their rows.

The PHP task centers read `back_up` by (type, relation_id); here they get one DataFrame per
table, with exact types (Arrow-backed dtypes: decimals, tz-aware timestamps, big integers and
NULLs stay what they were).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from htd_pipelines import settings
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.registry.arrow_types import KIND_META, TAGGED, untag
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import BackupRecord, CatalogError
from htd_pipelines.store.manifest import Manifest
from htd_pipelines.store.snapshots import SnapshotStore
from htd_pipelines.versions.chain import compose, version_chain


def find_backup(
    type_name: str,
    relation_id: object,
    version: int | None = None,
    *,
    database_url: str | None = None,
) -> BackupRecord:
    """The catalog row of a backup: the given version, or the newest one whose delete did not
    fail (a failed delete leaves a copy of a session that is still live: asked for by its
    version, it is given)."""
    engine = get_engine(database_url or settings.database_url())
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        found = catalog.find_backups(
            conn, type_name=type_name, relation_id=str(relation_id), version=version, limit=1,
            usable_only=version is None,
        )  # fmt: skip
    if not found:
        which = f"version {version}" if version is not None else "any version"
        raise CatalogError(f"no backup of type {type_name!r}, relation id {relation_id} ({which})")
    return found[0]


def list_backups(
    type_name: str | None = None,
    relation_id: object | None = None,
    *,
    database_url: str | None = None,
    limit: int | None = None,
) -> list[BackupRecord]:
    engine = get_engine(database_url or settings.database_url())
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        return catalog.find_backups(
            conn,
            type_name=type_name,
            relation_id=None if relation_id is None else str(relation_id),
            limit=limit,
        )


def read_tables(manifest: Manifest, store: SnapshotStore) -> dict[str, pd.DataFrame]:
    tables = {  # every file checked (sha256, size; decrypted) before any frame is made
        t.table: pq.read_table(store.read_checked(f"{manifest.location}/{t.file}", t))
        for t in manifest.tables
    }
    return {name: frame(t) for name, t in tables.items()}


def frame(table: pa.Table) -> pd.DataFrame:
    """A snapshot table as a DataFrame of its values (Arrow dtypes); SQLite columns carried as
    tagged text (any storage class) are given back as their Python values (object dtype)."""
    out = table.to_pandas(types_mapper=pd.ArrowDtype)
    for f in table.schema:
        if (f.metadata or {}).get(KIND_META) == TAGGED.encode():
            values = [untag(v) for v in table.column(f.name).to_pylist()]
            out[f.name] = pd.Series(values, dtype=object, index=out.index)
    return out


def load_backup(
    type: str,  # noqa: A002 - the catalog's own column name
    relation_id: object,
    version: int | None = None,
    *,
    database_url: str | None = None,
    snapshot_uri: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Every table of a backup (newest version unless `version`), checked against its manifest."""
    record = find_backup(type, relation_id, version, database_url=database_url)
    manifest = record.manifest
    store = SnapshotStore(snapshot_uri or manifest.snapshot_uri)
    if manifest.kind != "full":  # an incremental version: the session's state at that version
        frames, _, _ = composed_version(record, store, database_url=database_url)
        return frames
    return read_tables(manifest, store)


def composed_version(
    record: BackupRecord, store: SnapshotStore, *, database_url: str | None = None
) -> tuple[dict[str, pd.DataFrame], list[dict], list[int]]:
    """An incremental or differential version: the session's state at that version (compose
    of its chain, full version first) as frames, the remote files of those rows, and the
    chain's versions."""
    engine = get_engine(database_url or settings.database_url())
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        chain = version_chain(conn, record.type, record.relation_id, record.version)
    state = compose(chain, store)
    refs: dict[tuple[str, str], list[str]] = {}  # (table, file column) -> key columns
    for link in chain:
        for t in link.manifest.tables:
            for ref in t.files:
                refs.setdefault((t.table, ref["column"]), list(ref["key_columns"]))
    files = []
    for (table, column), key in refs.items():
        rows = state[table].filter(pc.is_valid(state[table].column(column)))
        keys = [rows.column(c).to_pylist() for c in key]
        for i, url in enumerate(rows.column(column).to_pylist()):
            files.append(
                {
                    "table": table,
                    "column": column,
                    "key": {c: k[i] for c, k in zip(key, keys, strict=True)},
                    "url": url,
                }
            )
    frames = {name: frame(t) for name, t in state.items()}
    return frames, files, [link.version for link in chain]
