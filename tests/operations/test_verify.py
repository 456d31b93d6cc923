"""verify_backups_job and the snapshots_verified asset check on backup_catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from htd_pipelines.api import list_backups
from htd_pipelines.cli.main import main
from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.jobs.verify import VERIFY_OP
from htd_pipelines.store import catalog
from tests.support.dbs import drop_database, new_database
from tests.support.env import make_env


@pytest.fixture
def env(monkeypatch, db_url, tmp_path):
    env = make_env(monkeypatch, db_url, tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    create_demo_schema(env.engine)
    env.ids = seed_demo(env.engine, 4, seed=21, test_fraction=0)
    assert env.run_backup(env.ids[:3]).success
    return env


def run_verify(env, **config):
    job = env.defs().resolve_job_def("verify_backups_job")
    result = job.execute_in_process(
        run_config={"ops": {VERIFY_OP: {"config": config}}},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return result, evaluation, {k: v.value for k, v in evaluation.metadata.items()}


def verifications(env) -> list[dict]:
    with env.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(catalog.verification)).mappings()]


def test_verification_passes_and_is_recorded_per_backup(env) -> None:
    result, evaluation, meta = run_verify(env)
    assert result.success and evaluation.passed
    assert meta["checked"] == 3 and meta["failed"] == 0
    rows = verifications(env)
    assert sorted(r["backup_id"] for r in rows) == sorted(b.id for b in list_backups())
    assert all(r["status"] == "ok" and r["run_id"] == result.run_id for r in rows)
    # unchanged and recently verified: a second run checks only what is new
    assert env.run_backup([env.ids[3]], keep_source=True).success
    _, evaluation, meta = run_verify(env)
    assert (meta["checked"], meta["skipped_recently_verified"]) == (1, 3)


def test_a_flipped_bit_is_detected(env) -> None:
    victim = list_backups("inst", env.ids[1])[0]
    m = victim.manifest
    path = Path(env.store().full(f"{m.location}/{m.table('task_log').file}"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))
    result, evaluation, meta = run_verify(env)
    assert result.success  # the check ran; its verdict is a failed check, not a crashed run
    assert not evaluation.passed and meta["failed"] == 1
    assert "task_log does not match its manifest" in meta["failures"][str(victim.id)]
    failed = [r for r in verifications(env) if r["status"] == "failed"]
    assert [r["backup_id"] for r in failed] == [victim.id]
    with env.engine.connect() as conn:
        log = (
            conn.execute(
                sa.select(catalog.operation_log).where(
                    catalog.operation_log.c.action == "verify",
                    catalog.operation_log.c.status == "failed",
                )
            )
            .mappings()
            .all()
        )
    assert len(log) == 1 and "task_log" in log[0]["message"]
    # a failed backup is not skipped next time: it is re-read until it is fixed
    _, again, meta = run_verify(env)
    assert not again.passed and meta["failed"] == 1


def test_full_test_restore_into_a_scratch_database(env, dialect, tmp_path, monkeypatch) -> None:
    scratch = new_database(dialect, tmp_path / "scratch")
    try:
        create_demo_schema(get_engine(scratch))
        monkeypatch.setenv("HTD_VERIFY_SCRATCH", scratch)
        result, evaluation, meta = run_verify(env, full_restore_env="HTD_VERIFY_SCRATCH")
        assert evaluation.passed and meta["checked"] == 3 and meta["full_restore"]
        with get_engine(scratch).connect() as conn:  # rehearsed, then rolled back
            assert conn.execute(sa.text("SELECT COUNT(*) FROM process_session")).scalar() == 0
        assert all(b.is_reback == 0 for b in list_backups())
        assert all(r["full_restore"] == 1 for r in verifications(env))
    finally:
        drop_database(scratch)


def test_verify_command(env, capsys) -> None:
    assert main(["verify"]) == 0
    assert "checked 3" in capsys.readouterr().out
    victim = list_backups("inst", env.ids[0])[0]
    m = victim.manifest
    Path(env.store().full(f"{m.location}/{m.table('session_node').file}")).unlink()
    assert main(["verify", str(victim.id)]) == 4
    out = capsys.readouterr().out
    assert f"backup {victim.id}:" in out and "is missing" in out
