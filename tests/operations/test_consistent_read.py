"""Every table of a backup is read from one state of the database: a change the application
commits between the extract of one table and the next is in none of them (the backup equals
the session at the instant of the plan), and the manifest says how the state was held."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from htd_pipelines import backup
from htd_pipelines.api import load_backup
from htd_pipelines.dialects.engine import create_engine
from htd_pipelines.registry.spec import load_registry


@pytest.mark.parametrize("fast_path", ["1", "0"])
def test_a_change_between_two_extracts_is_in_no_table(seeded_env, monkeypatch, fast_path) -> None:
    monkeypatch.setenv("HTD_FAST_PATH", fast_path)
    env = seeded_env(2, seed=4)
    sid = env.ids[0]
    registry, store = load_registry(env.relations_file), env.store()
    plan = backup.plan_backup(
        env.engine, registry, store, type_name="inst", relation_ids=[sid], uid="t",
        keep_source=True, run_id=f"consistent-{fast_path}",
    )  # fmt: skip
    assert plan.consistency
    tables = [t.name for t in backup.resolved(env.engine, registry, "inst", plan.run_id).tables]
    before = env.count("session_comment", f"WHERE sess_id = {sid}")
    extracts = [backup.extract_table(env.engine, registry, store, plan, tables[0])]
    writes_wait = env.engine.dialect.name == "sqlite"  # one read transaction holds writers off
    if not writes_wait:
        other = create_engine(env.url)
        with other.begin() as conn:  # the application, after the first table was read
            conn.execute(
                sa.text(
                    "INSERT INTO session_comment (sess_id, author_uid, content, created_at) "
                    "VALUES (:s, 'late', 'committed during the backup', :t)"
                ),
                {"s": sid, "t": "2024-01-01 00:00:00"},
            )
        other.dispose()
    extracts += [backup.extract_table(env.engine, registry, store, plan, t) for t in tables[1:]]
    [rec] = backup.record_backup(env.engine, registry, store, plan, extracts)
    frames = load_backup("inst", sid)
    assert len(frames["session_comment"]) == before  # the state of the plan, not a mix
    if not writes_wait:
        assert env.count("session_comment", f"WHERE sess_id = {sid}") == before + 1
    with env.engine.connect() as conn:
        from htd_pipelines.store import catalog

        manifest = catalog.get_backup(conn, rec.backup_id).manifest
    assert manifest.consistency == plan.consistency
