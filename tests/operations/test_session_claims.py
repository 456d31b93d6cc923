"""One backup or restore of a session at a time, whatever launched it (store/session_claims.py):
a second one is refused naming the run that holds the session; a claim whose run is over, or
whose heartbeat stopped, is taken over."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from htd_pipelines import backup, delete, restore
from htd_pipelines.api import list_backups
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.store import catalog, session_claims


@pytest.fixture
def env(seeded_env):
    return seeded_env(3, seed=11)


def _backup(env, sid, run_id: str, **kwargs):
    return delete.backup_sessions(
        env.engine, load_registry(env.relations_file), env.store(), type_name="inst",
        relation_ids=[sid], uid="t", run_id=run_id, **kwargs,
    )  # fmt: skip


def test_a_held_session_is_refused_naming_the_run_then_free_again(env) -> None:
    sid = env.ids[0]
    session_claims.claim_all(env.engine, "inst", [str(sid)], "run-holding-it", "backup")
    with pytest.raises(backup.BackupError, match="being backed up by run run-holding-it"):
        _backup(env, sid, "second")
    assert list_backups("inst", sid) == []
    assert env.count("process_session", f"WHERE id = {sid}") == 1  # nothing deleted
    session_claims.release(env.engine, "inst", [str(sid)], "run-holding-it")
    [rec] = _backup(env, sid, "third")
    with env.engine.connect() as conn:  # released at the end of the backup
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(catalog.session_claim)).scalar()
            == 0
        )
    # a restore while another run holds the session is refused too
    session_claims.claim_all(env.engine, "inst", [str(sid)], "run-holding-it", "backup")
    registry = load_registry(env.relations_file)
    with pytest.raises(restore.RestoreRefused, match="being backed up by run run-holding-it"):
        restore.restore_backup(env.engine, registry, rec.backup_id, uid="t", run_id="r")
    assert catalog_record(env, rec.backup_id).is_reback == 0
    session_claims.release(env.engine, "inst", [str(sid)], "run-holding-it")
    restore.restore_backup(env.engine, registry, rec.backup_id, uid="t", run_id="r")
    assert env.count("process_session", f"WHERE id = {sid}") == 1


def catalog_record(env, backup_id: int):
    with env.engine.connect() as conn:
        return catalog.get_backup(conn, backup_id)


def test_a_claim_of_a_run_that_is_over_is_taken_over(env) -> None:
    sid = env.ids[1]
    session_claims.claim_all(env.engine, "inst", [str(sid)], "crashed-run", "backup")
    registry = load_registry(env.relations_file)
    plan = backup.plan_backup(
        env.engine, registry, env.store(), type_name="inst", relation_ids=[sid], uid="t",
        keep_source=True, run_id="next-run",
        run_status=lambda run_id: "FAILURE" if run_id == "crashed-run" else None,
    )  # fmt: skip
    assert plan.relation_ids == (str(sid),)
    backup.release_sessions(env.engine, plan)


def test_a_claim_whose_heartbeat_stopped_is_taken_over(env, monkeypatch) -> None:
    """A claim made by a process that died (its heartbeat stopped): stale after
    HTD_CLAIM_STALE_SECONDS, then the next run takes it."""
    monkeypatch.setenv("HTD_CLAIM_STALE_SECONDS", "1")
    sid = env.ids[2]
    now = catalog.utcnow()
    catalog.ensure_catalog(env.engine)
    with env.engine.begin() as conn:  # as a killed process leaves it: no thread refreshes it
        conn.execute(
            catalog.session_claim.insert().values(
                type="inst", relation_id=str(sid), run_id="killed", action="backup",
                claimed_at=now, heartbeat_at=now,
            )
        )  # fmt: skip
    with pytest.raises(backup.BackupError, match="by run killed"):
        _backup(env, sid, "too-early", keep_source=True)
    time.sleep(1.5)
    [rec] = _backup(env, sid, "later", keep_source=True)
    assert rec.relation_id == str(sid)
