"""Versions and retention: retention_job and `htd-pipelines prune`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from htd_pipelines.api import list_backups
from htd_pipelines.cli.main import main
from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.retention import plan_prune, prune
from htd_pipelines.settings import DEMO_RELATIONS_FILE
from htd_pipelines.store import catalog
from htd_pipelines.verify import verify_backups
from tests.support.env import make_env

POLICY = """
    retention:
      keep_last: 2
      allow_unrestored: {allow}
"""


def registry_with(tmp_path: Path, allow: bool) -> Path:
    base = DEMO_RELATIONS_FILE.read_text().split("    retention:")[0]
    path = tmp_path / f"relations-{allow}.yaml"
    path.write_text(base + POLICY.format(allow=str(allow).lower()))
    return path


@pytest.fixture
def env(monkeypatch, db_url, tmp_path):
    env = make_env(monkeypatch, db_url, tmp_path, str(registry_with(tmp_path, True)))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    create_demo_schema(env.engine)
    env.ids = seed_demo(env.engine, 2, seed=31, test_fraction=0)
    for _ in range(4):
        assert env.run_backup([env.ids[0]], keep_source=True).success
    assert env.run_backup([env.ids[1]], keep_source=True).success
    return env


def versions(env, sess) -> list[int]:
    return sorted(r.version for r in list_backups("inst", sess))


def test_prune_keeps_the_newest_and_the_newest_verified(env, capsys) -> None:
    registry = load_registry(env.relations_file)
    v1 = next(r for r in list_backups("inst", env.ids[0]) if r.version == 1)
    verify_backups(
        env.engine, registry, backup_ids=[v1.id], run_id="v", recheck_after=dt.timedelta(hours=1)
    )
    v2 = next(r for r in list_backups("inst", env.ids[0]) if r.version == 2)

    assert main(["prune", "--dry-run", "--json"]) == 0
    plan = {d["backup_id"]: d for d in json.loads(capsys.readouterr().out)}
    assert [d["version"] for d in plan.values() if d["prune"]] == [2]
    assert plan[v1.id]["reason"] == "the newest verified backup of this relation id"
    assert versions(env, env.ids[0]) == [1, 2, 3, 4]  # a dry run removes nothing

    assert main(["prune"]) == 0
    assert f"pruned 1 backup(s): {v2.id}" in capsys.readouterr().out
    assert versions(env, env.ids[0]) == [1, 3, 4] and versions(env, env.ids[1]) == [1]
    assert not Path(env.store().full(v2.manifest.location)).exists()
    assert Path(env.store().full(v1.manifest.location)).exists()
    assert not [d for d in plan_prune(env.engine, registry) if d.prune]  # nothing more to do


def test_never_restored_backups_stay_unless_allowed(env, tmp_path) -> None:
    strict = load_registry(registry_with(tmp_path, False))
    decisions = plan_prune(env.engine, strict)
    assert not [d for d in decisions if d.prune]
    assert {d.reason for d in decisions if d.relation_id == str(env.ids[0]) and d.version <= 2} == {
        "never restored (set allow_unrestored to prune it)"
    }


def test_keep_days_and_an_interrupted_prune_is_finished_by_the_next(env, tmp_path) -> None:
    base = DEMO_RELATIONS_FILE.read_text().split("    retention:")[0]
    path = tmp_path / "days.yaml"
    path.write_text(base + "    retention: {keep_days: 30, allow_unrestored: true}\n")
    registry = load_registry(path)
    old = catalog.utcnow() - dt.timedelta(days=90)
    with env.engine.begin() as conn:
        conn.execute(
            catalog.back_up.update()
            .where(catalog.back_up.c.version <= 2, catalog.back_up.c.relation_id == str(env.ids[0]))
            .values(created_at=old)
        )
    going = [d for d in plan_prune(env.engine, registry) if d.prune]
    assert sorted((d.relation_id, d.version) for d in going) == [
        (str(env.ids[0]), 1),
        (str(env.ids[0]), 2),
    ]
    # interrupted after the files of the first one were removed, before its catalog row
    first = next(r for r in list_backups() if r.id == going[0].backup_id)
    env.store().delete_dir(first.manifest.location)
    assert prune(env.engine, plan_prune(env.engine, registry), uid="t", run_id="r") == [
        d.backup_id for d in going
    ]
    assert versions(env, env.ids[0]) == [3, 4]
    with env.engine.connect() as conn:
        n = conn.execute(
            sa.select(sa.func.count()).where(catalog.operation_log.c.action == "prune")
        ).scalar()
    assert n == 2
