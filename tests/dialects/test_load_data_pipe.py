"""MariaDB's LOAD DATA fast path writes no file: the rows travel through a pipe, so a killed
restore leaves no rows in clear text on disk; leftovers of earlier releases are removed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from htd_pipelines import delete, restore
from htd_pipelines.dialects import mysql
from htd_pipelines.registry.spec import load_registry


@pytest.mark.parametrize("dialect", ["mariadb"], indirect=True)
def test_load_data_goes_through_a_pipe_and_old_files_go(seeded_env, monkeypatch) -> None:
    env = seeded_env(2, seed=5)
    registry = load_registry(env.relations_file)
    [rec] = delete.backup_sessions(
        env.engine, registry, env.store(), type_name="inst", relation_ids=[env.ids[0]],
        uid="t", run_id="pipe",
    )  # fmt: skip
    stale = Path(tempfile.gettempdir()) / "htd_load_left_by_a_killed_run.tsv"
    stale.write_text("1\tsecret row\n")
    monkeypatch.setattr(mysql, "_STALE_CHECKED", [])

    def no_files(*args, **kwargs):
        raise AssertionError("LOAD DATA must not write a temporary file")

    monkeypatch.setattr(tempfile, "mkstemp", no_files)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_files)
    loads: list[str] = []
    real = mysql.load_data
    monkeypatch.setattr(
        mysql, "load_data", lambda c, t, rows: (loads.append(t.name), real(c, t, rows))
    )
    result = restore.restore_backup(env.engine, registry, rec.backup_id, uid="t", run_id="r")
    assert sum(result.rows.values()) == sum(rec.rows.values())
    assert loads  # the fast path ran
    assert not stale.exists()
