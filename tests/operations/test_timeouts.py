"""Timeouts everywhere: a lock the application holds ends a backup within HTD_LOCK_TIMEOUT_S
with the server's reason, nothing deleted and nothing left held (the next backup works once
the lock is gone); the session settings reach the server."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from htd_pipelines import delete
from htd_pipelines.dialects.engine import create_engine
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.store.catalog import CATALOG_TABLES
from tests.support.chinook import snapshot_database


def test_a_held_lock_ends_the_backup_in_the_lock_timeout(seeded_env, monkeypatch) -> None:
    monkeypatch.setenv("HTD_LOCK_TIMEOUT_S", "1")
    env = seeded_env(2, seed=8)
    sid = env.ids[0]
    registry = load_registry(env.relations_file)
    before = snapshot_database(env.url, exclude=CATALOG_TABLES)
    app = create_engine(env.url)
    holder = app.connect()
    holder.begin()  # the application edits the session and does not commit yet
    holder.execute(sa.text(f"UPDATE session_comment SET content = content WHERE sess_id = {sid}"))
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match="(?i)lock|timeout|locked") as failed:
            delete.backup_sessions(
                env.engine, registry, env.store(), type_name="inst", relation_ids=[sid],
                uid="t", run_id="locked-out",
            )  # fmt: skip
        assert time.monotonic() - started < 20, "the lock timeout did not end the wait"
        assert "Traceback" not in str(failed.value)
    finally:
        holder.rollback()
        holder.close()
        app.dispose()
    assert snapshot_database(env.url, exclude=CATALOG_TABLES) == before
    [rec] = delete.backup_sessions(  # nothing was left held: the session is free again
        env.engine, registry, env.store(), type_name="inst", relation_ids=[sid],
        uid="t", run_id="after",
    )  # fmt: skip
    assert env.count("process_session", f"WHERE id = {sid}") == 0
    assert rec.relation_id == str(sid)


def test_the_timeouts_reach_the_server(seeded_env, monkeypatch, dialect) -> None:
    monkeypatch.setenv("HTD_LOCK_TIMEOUT_S", "7")
    monkeypatch.setenv("HTD_STATEMENT_TIMEOUT_S", "120")
    env = seeded_env(0)
    with env.engine.connect() as conn:
        if dialect == "postgresql":
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "7s"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "2min"
        elif dialect == "mariadb":
            row = conn.exec_driver_sql(
                "SELECT @@innodb_lock_wait_timeout, @@lock_wait_timeout"
            ).one()
            assert tuple(row) == (7, 7)
            assert conn.connection.dbapi_connection._read_timeout == 120
        else:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000


def test_a_malformed_timeout_is_a_one_line_error(monkeypatch) -> None:
    from htd_pipelines import settings

    monkeypatch.setenv("HTD_LOCK_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="HTD_LOCK_TIMEOUT_S='soon' is not a number of seconds"):
        settings.lock_timeout_s()
