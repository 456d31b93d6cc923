"""The read API for the platform task centers: find backups and load their rows.

The PHP task centers read `back_up` by (type, relation_id); here they get one DataFrame per
table, with exact types (Arrow-backed dtypes: decimals, tz-aware timestamps, big integers and
NULLs stay what they were).
"""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from htd_pipelines import catalog, settings
from htd_pipelines.catalog import BackupRecord, CatalogError
from htd_pipelines.db import get_engine
from htd_pipelines.manifest import Manifest
from htd_pipelines.snapshots import SnapshotStore


def find_backup(
    type_name: str,
    relation_id: object,
    version: int | None = None,
    *,
    database_url: str | None = None,
) -> BackupRecord:
    """The catalog row of a backup: the given version, or the newest one."""
    engine = get_engine(database_url or settings.database_url())
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        found = catalog.find_backups(
            conn, type_name=type_name, relation_id=str(relation_id), version=version, limit=1
        )
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
    return {name: t.to_pandas(types_mapper=pd.ArrowDtype) for name, t in tables.items()}


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
        from htd_pipelines.incremental import compose_version

        engine = get_engine(database_url or settings.database_url())
        state = compose_version(engine, record.type, record.relation_id, record.version, store)
        return {name: t.to_pandas(types_mapper=pd.ArrowDtype) for name, t in state.items()}
    return read_tables(manifest, store)
