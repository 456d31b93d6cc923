"""Snapshots are durable before the catalog row commits (and so before any source row is
deleted): every Parquet file and manifest.json is fsynced, then their folders up to the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from htd_pipelines import delete
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.store import catalog


@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_files_and_folders_are_fsynced_before_the_catalog_row(seeded_env, monkeypatch) -> None:
    env = seeded_env(2, seed=3)
    synced: list[str] = []
    real_fsync, real_insert = os.fsync, catalog.insert_backup
    at_insert: list[list[str]] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def insert_backup(*args, **kwargs):  # noqa: ANN202 - the catalog row of the backup
        at_insert.append(list(synced))
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(catalog, "insert_backup", insert_backup)
    [recorded] = delete.backup_sessions(
        env.engine, load_registry(env.relations_file), env.store(), type_name="inst",
        relation_ids=[env.ids[0]], uid="t", run_id="durable",
    )  # fmt: skip
    [before_row] = at_insert
    folder = Path(env.snapshot_dir) / recorded.location
    files = sorted(str(p) for p in folder.iterdir() if p.suffix in (".parquet", ".json"))
    assert len(files) == 1 + len(recorded.rows)  # every table's file and the manifest
    missing = [f for f in files if f not in before_row]
    assert not missing, f"not fsynced before the catalog row: {missing}"
    folders = [folder, folder.parent, folder.parent.parent, Path(env.snapshot_dir)]
    for f in folders:
        assert str(f.resolve()) in before_row, f"folder {f} not fsynced before the catalog row"
    manifest = str(folder / "manifest.json")
    assert before_row.index(manifest) < before_row.index(str(folder.resolve()))
