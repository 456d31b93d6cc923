"""test_session_cleanup_job on SQLite, PostgreSQL and MariaDB: which sessions go, with which
rows, in bounded batches, backed up first (or not), and what the operation log says."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance

from htd_pipelines.api import list_backups
from htd_pipelines.backup import BackupError, resolved
from htd_pipelines.cleanup import purge_test_sessions
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.demo.schema import SESSION_TABLES, process_session
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.jobs.run_config import restore_run_config
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import CATALOG_TABLES
from tests.support.chinook import snapshot_database

ALL_TABLES = ("process_session", *SESSION_TABLES)
JOB = "test_session_cleanup_job"
OP = "clean_test_sessions"
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

# (is_test, age) of each session, by position in env.ids. With older_than_days=7 (the default) the
# first five are eligible; ages are distinct so "oldest first" is one order.
ROLES: tuple[tuple[bool, dt.timedelta], ...] = (
    (True, 400 * DAY),  # eligible, oldest
    (True, 45 * DAY),
    (True, 31 * DAY),
    (True, 8.5 * DAY),
    (True, 7 * DAY + HOUR),  # eligible, just past the cutoff
    (True, 7 * DAY - HOUR),  # test, but just too young
    (True, 0.1 * DAY),  # test, recent
    (False, 400 * DAY),  # not a test session, old
    (False, 30 * DAY),
    (False, 100 * DAY),
    (False, 6.9 * DAY),  # not a test session, recent
    (False, 0.5 * DAY),
)
ELIGIBLE = 5  # ROLES[:5], oldest first
# which seeded session (by insert order) gets which role: keys do not follow age
ROLE_OF = (7, 2, 10, 0, 5, 11, 3, 8, 1, 9, 4, 6)


@pytest.fixture
def env(seeded_env):
    env = seeded_env()
    seeded = seed_demo(env.engine, len(ROLES), seed=5, test_fraction=0)
    env.ids = [seeded[i] for i in ROLE_OF]  # env.ids[k] has ROLES[k]
    now = dt.datetime.now(dt.UTC)
    with env.engine.begin() as conn:
        for sid, (is_test, age) in zip(env.ids, ROLES, strict=True):
            conn.execute(
                sa.update(process_session)
                .where(process_session.c.id == sid)
                .values(is_test=is_test, created_at=now - age)
            )
    env.eligible = env.ids[:ELIGIBLE]
    env.kept = env.ids[ELIGIBLE:]
    # the sessions that go own rows in every registry table, the grandchild task_log included
    owned = owned_keys(env, env.eligible)
    assert all(owned[t] for t in ALL_TABLES), {t: len(owned[t]) for t in ALL_TABLES}
    return env


def owned_keys(env, sess_ids) -> dict[str, set]:
    """Primary keys (`id`) of each table's rows owned by the given sessions."""
    ids = ", ".join(str(int(s)) for s in sess_ids) or "NULL"
    where = {
        "process_session": f"id IN ({ids})",
        "task_log": f"task_id IN (SELECT id FROM session_task WHERE sess_id IN ({ids}))",
    }
    out = {}
    with env.engine.connect() as conn:
        for t in ALL_TABLES:
            cond = where.get(t, f"sess_id IN ({ids})")
            out[t] = set(conn.execute(sa.text(f"SELECT id FROM {t} WHERE {cond}")).scalars())
    return out


def state(env) -> dict:
    """Every application table, all columns as the driver returns them (catalog left out)."""
    return snapshot_database(env.url, exclude=CATALOG_TABLES)


def without(snapshot: dict, owned: dict[str, set]) -> dict:
    """`snapshot` minus the owned rows (every demo table's first column is its `id` key)."""
    return {t: [r for r in rows if r[0] not in owned.get(t, ())] for t, rows in snapshot.items()}


def run_cleanup(env, **config):
    job = env.defs().resolve_job_def(JOB)
    result = job.execute_in_process(
        run_config={"ops": {OP: {"config": config}}} if config else None,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success, failure_message(result)
    return result, result.output_for_node(OP)


def log_rows(env, run_id: str) -> list[dict]:
    log = catalog.operation_log
    with env.engine.connect() as conn:
        rows = conn.execute(sa.select(log).where(log.c.run_id == run_id).order_by(log.c.id))
        return [
            {
                **r,
                "relation_ids": json.loads(r["relation_ids"]),
                "backup_ids": json.loads(r["backup_ids"]),
                "counts": json.loads(r["counts"]),
            }
            for r in rows.mappings()
        ]


def counts_of(owned: dict[str, set]) -> dict[str, int]:
    return {t: len(owned[t]) for t in ALL_TABLES}


def test_without_backup_only_old_test_sessions_go_with_all_their_rows(env) -> None:
    before = state(env)
    owned = owned_keys(env, env.eligible)
    kept_before = owned_keys(env, env.kept)

    result, out = run_cleanup(env, older_than_days=7, backup_first=False, uid="janitor")

    assert out == {
        "sessions": ELIGIBLE,
        "rows": sum(counts_of(owned).values()),
        "batches": 1,
        "backup_ids": [],
    }
    # every related row of the removed sessions is gone, in every registry table
    assert all(not rows for rows in owned_keys(env, env.eligible).values())
    # everything else (recent test sessions, old and new non-test sessions, their rows, other
    # tables) is untouched, value for value
    assert state(env) == without(before, owned)
    assert owned_keys(env, env.kept) == kept_before
    # no backup was made
    assert list_backups("inst") == []
    # one operation-log row for the one batch
    [row] = log_rows(env, result.run_id)
    assert (row["action"], row["status"], row["uid"], row["type"]) == (
        "purge_test",
        "ok",
        "janitor",
        "inst",
    )
    assert row["relation_ids"] == [str(s) for s in env.eligible]  # oldest first
    assert row["counts"] == counts_of(owned)
    assert row["backup_ids"] == []


def test_defaults_back_up_first_and_each_backup_restores_exactly(env) -> None:
    before = state(env)
    owned = {s: owned_keys(env, [s]) for s in env.eligible}
    all_owned = owned_keys(env, env.eligible)

    result, out = run_cleanup(env)  # README defaults: 7 days, backup_first true

    assert (out["sessions"], out["batches"]) == (ELIGIBLE, 1)
    assert out["rows"] == sum(counts_of(all_owned).values())
    assert all(not rows for rows in owned_keys(env, env.eligible).values())
    assert state(env) == without(before, all_owned)

    # one backup per removed session, recording its rows, source deleted; none of the others
    records = list_backups("inst")
    assert sorted(int(r.relation_id) for r in records) == sorted(env.eligible)
    assert sorted(r.id for r in records) == sorted(out["backup_ids"])
    digest = load_registry(env.relations_file).get("inst").digest()
    for r in records:
        assert (r.version, r.source_deleted, r.is_reback) == (1, 1, 0)
        assert r.uid == "test_session_cleanup" and r.run_id == result.run_id
        assert r.manifest.registry_sha256 == digest
        assert {t.table: t.rows for t in r.manifest.tables} == counts_of(owned[int(r.relation_id)])

    # the operation log: the backup and the delete of the batch, with the rows per table
    rows = log_rows(env, result.run_id)
    assert [(r["action"], r["status"]) for r in rows] == [("backup", "ok"), ("delete", "ok")]
    for r in rows:
        assert r["relation_ids"] == [str(s) for s in env.eligible]
        assert sorted(r["backup_ids"]) == sorted(out["backup_ids"])
        assert r["counts"] == counts_of(all_owned)
        assert r["uid"] == "test_session_cleanup"

    # every backup restores exactly what was removed
    restore_job = env.defs().resolve_job_def("restore_job")
    for r in records:
        restored = restore_job.execute_in_process(
            run_config=restore_run_config(r.id, "restorer"),
            instance=DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        assert restored.success, failure_message(restored)
    assert state(env) == before


@pytest.mark.parametrize("backup_first", [False, True], ids=["no_backup", "backup_first"])
def test_batches_are_bounded_oldest_first(env, backup_first: bool) -> None:
    before = state(env)
    action = "backup" if backup_first else "purge_test"
    config = {"batch_size": 2, "max_batches": 2, "backup_first": backup_first}

    # run 1: at most batch_size * max_batches sessions, in batches of batch_size, oldest first
    result, out = run_cleanup(env, **config)
    assert (out["sessions"], out["batches"]) == (4, 2)
    first = env.eligible[:4]
    assert all(not rows for rows in owned_keys(env, first).values())
    assert owned_keys(env, [env.eligible[4]])["process_session"] == {env.eligible[4]}
    batches = [r["relation_ids"] for r in log_rows(env, result.run_id) if r["action"] == action]
    assert batches == [[str(s) for s in first[:2]], [str(s) for s in first[2:]]]

    # run 2: the rest
    result, out = run_cleanup(env, **config)
    assert (out["sessions"], out["batches"]) == (1, 1)
    batches = [r["relation_ids"] for r in log_rows(env, result.run_id) if r["action"] == action]
    assert batches == [[str(env.eligible[4])]]

    # run 3: nothing left to do, nothing logged
    result, out = run_cleanup(env, **config)
    assert (out["sessions"], out["rows"], out["batches"]) == (0, 0, 0)
    assert log_rows(env, result.run_id) == []

    assert state(env) == without(before, owned_keys_from(before, env.eligible))
    assert len(list_backups("inst")) == (ELIGIBLE if backup_first else 0)


def owned_keys_from(snapshot: dict, sess_ids) -> dict[str, set]:
    """owned_keys computed on a snapshot (for rows no longer in the database)."""
    sess = set(sess_ids)
    # column positions in table order: id first, sess_id second; task_log: id, task_id
    tasks = {r[0] for r in snapshot["session_task"] if r[1] in sess}
    out = {"process_session": {r[0] for r in snapshot["process_session"] if r[0] in sess}}
    out["task_log"] = {r[0] for r in snapshot["task_log"] if r[1] in tasks}
    for t in SESSION_TABLES:
        if t != "task_log":
            out[t] = {r[0] for r in snapshot[t] if r[1] in sess}
    return out


def test_older_than_days_is_the_cutoff(env) -> None:
    # 7.5 days: only the four sessions older than that go; 7 days + 1 hour stays
    _, out = run_cleanup(env, older_than_days=7.5, backup_first=False)
    assert out["sessions"] == 4
    left = owned_keys(env, env.ids)["process_session"]
    assert left == set(env.ids) - set(env.eligible[:4])
    # 0.05 days (72 minutes): the three test sessions left, the 2.4-hour-old one included
    _, out = run_cleanup(env, older_than_days=0.05, backup_first=False)
    assert out["sessions"] == 3
    left = owned_keys(env, env.ids)["process_session"]
    assert left == set(env.kept[2:])  # only the non-test sessions remain


def test_purge_refuses_sessions_that_are_not_test_sessions(env) -> None:
    before = state(env)
    rtype = resolved(env.engine, load_registry(env.relations_file), "inst", "t")
    catalog.ensure_catalog(env.engine)
    mixed = [env.eligible[0], env.kept[2]]  # a test session and an old non-test session
    with pytest.raises(BackupError, match=f"not test sessions: {env.kept[2]}$"):
        purge_test_sessions(env.engine, rtype, mixed, uid="x", run_id="r")
    assert state(env) == before  # nothing deleted, not even the test session


# SQLite serialises writers: a purge cannot interleave with another transaction's update there
@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"], indirect=True)
def test_purge_leaves_a_session_that_stops_being_a_test_session_meanwhile(env, dialect) -> None:
    """A session flipped to non-test by a transaction that commits while the purge waits for
    it is not deleted: the purge's test check sees the committed flag, not a stale one."""
    target = env.eligible[0]
    before = owned_keys(env, [target])
    rtype = resolved(env.engine, load_registry(env.relations_file), "inst", "t")
    catalog.ensure_catalog(env.engine)
    outcome: list[BaseException | None] = []

    def purge() -> None:
        try:
            purge_test_sessions(env.engine, rtype, [target], uid="x", run_id="r")
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    with env.engine.connect() as other:
        with other.begin():
            other.execute(
                sa.update(process_session)
                .where(process_session.c.id == target)
                .values(is_test=False)
            )
            worker = threading.Thread(target=purge)
            worker.start()
            time.sleep(1.0)  # the purge is now waiting for this transaction's row lock
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert isinstance(outcome[0], BackupError), outcome
    assert owned_keys(env, [target]) == before  # nothing of it was deleted
