"""deletion_marker_sensor with build_sensor_context and real databases: batching, run keys,
cursor, claims (never two backups of one marker), bounded retries, a 5,000-marker backlog."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, build_sensor_context

from htd_pipelines.cli.launch import failure_message
from htd_pipelines.demo.schema import process_session
from htd_pipelines.demo.seed import seed_demo
from htd_pipelines.resources import AppDatabase, RelationRegistry
from htd_pipelines.sensors.deletion_marker import deletion_marker_sensor
from htd_pipelines.store import catalog


@pytest.fixture
def env(seeded_env, monkeypatch):
    env = seeded_env()
    env.instance = DagsterInstance.ephemeral()
    return env


def mark(env, ids, by="app", at=None) -> None:
    at = at or dt.datetime.now(dt.UTC)
    with env.engine.begin() as conn:
        conn.execute(
            process_session.update()
            .where(process_session.c.id.in_(ids))
            .values(delete_marked_at=at, delete_marked_by=by)
        )


def tick(env, cursor=None):
    ctx = build_sensor_context(
        instance=env.instance,
        cursor=cursor,
        resources={
            "database": AppDatabase(url=env.url),
            "relations": RelationRegistry(path=env.relations_file),
        },
    )
    return deletion_marker_sensor(ctx)


def launch(env, request):
    job = env.defs().resolve_job_def("backup_job")
    return job.execute_in_process(
        run_config=request.run_config,
        instance=env.instance,
        tags=request.tags,
        raise_on_error=False,
    )


def backups_per_session(env) -> dict[str, int]:
    with env.engine.connect() as conn:
        rows = conn.execute(
            sa.select(catalog.back_up.c.relation_id, sa.func.count()).group_by(
                catalog.back_up.c.relation_id
            )
        ).all()
    return {r[0]: r[1] for r in rows}


def existing(env, ids) -> set[int]:
    with env.engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(process_session.c.id).where(process_session.c.id.in_(ids))
            ).scalars()
        )


def test_markers_are_batched_with_run_keys_and_a_cursor(env, monkeypatch) -> None:
    monkeypatch.setenv("HTD_MARKER_BATCH_SIZE", "3")
    ids = seed_demo(env.engine, 9, seed=2, test_fraction=0)
    assert tick(env).run_requests == []
    mark(env, ids[:7], by="alice")
    first = tick(env)
    batches = [
        r.run_config["ops"]["plan_backup"]["config"]["relation_ids"] for r in first.run_requests
    ]
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(int(i) for b in batches for i in b) == sorted(ids[:7])
    assert len({r.run_key for r in first.run_requests}) == 3
    assert all(r.tags["htd/trigger"] == "deletion_marker" for r in first.run_requests)
    assert first.run_requests[0].run_config["ops"]["plan_backup"]["config"]["uid"] == "alice"

    assert tick(env, first.cursor).run_requests == []  # the cursor moved past them
    # a lost cursor re-evaluates to the same run keys: Dagster launches a run_key once
    assert [r.run_key for r in tick(env).run_requests] == [r.run_key for r in first.run_requests]
    mark(env, ids[7:8])
    later = tick(env, first.cursor)
    assert [
        r.run_config["ops"]["plan_backup"]["config"]["relation_ids"] for r in later.run_requests
    ] == [[str(ids[7])]]

    for request in first.run_requests:
        assert launch(env, request).success
    assert existing(env, ids[:7]) == set()
    assert all(n == 1 for n in backups_per_session(env).values())


def test_the_same_marker_never_makes_two_backups(env) -> None:
    """Two runs for the same markers (overlapping ticks after a lost cursor)."""
    ids = seed_demo(env.engine, 4, seed=4, test_fraction=0)
    mark(env, ids)
    request = tick(env).run_requests[0]
    assert launch(env, request).success
    again = launch(env, request)  # the duplicate finds the markers done and the sessions gone
    assert not again.success
    assert backups_per_session(env) == {str(i): 1 for i in ids}
    with env.engine.connect() as conn:
        skipped = (
            conn.execute(
                sa.select(catalog.operation_log.c.message).where(
                    catalog.operation_log.c.action == "marker_skipped"
                )
            )
            .scalars()
            .all()
        )
    assert len(skipped) == len(ids)


def test_a_missing_session_is_reported_and_does_not_block_the_batch(env) -> None:
    ids = seed_demo(env.engine, 3, seed=8, test_fraction=0)
    with env.engine.begin() as conn:  # a bare session with no related rows, marked
        gone = conn.execute(
            process_session.insert()
            .values(name="bare", is_test=False)
            .returning(process_session.c.id)
        ).scalar_one()
    mark(env, [*ids, gone])
    request = tick(env).run_requests[0]
    with env.engine.begin() as conn:  # it disappears before the run starts
        conn.execute(process_session.delete().where(process_session.c.id == gone))
    result = launch(env, request)
    assert not result.success
    assert f"{gone}: the session no longer exists" in failure_message(result)
    assert existing(env, ids) == set()  # the rest of the batch was backed up and deleted
    assert set(backups_per_session(env)) == {str(i) for i in ids}


def test_a_failing_session_is_retried_boundedly_then_abandoned(env, monkeypatch) -> None:
    monkeypatch.setenv("HTD_MARKER_RETRY_MINUTES", "0")
    monkeypatch.setenv("HTD_MARKER_MAX_ATTEMPTS", "2")
    ids = seed_demo(env.engine, 3, seed=6, test_fraction=0)
    poison = ids[0]
    with env.engine.begin() as conn:  # a table outside the registry pins the poison session
        conn.execute(
            sa.text(
                "CREATE TABLE pin (id INTEGER PRIMARY KEY, sess_id BIGINT NOT NULL, "
                "FOREIGN KEY (sess_id) REFERENCES process_session (id))"
            )
        )
        conn.execute(sa.text("INSERT INTO pin (id, sess_id) VALUES (1, :s)"), {"s": poison})
    mark(env, ids)
    cursor = None
    launched = 0
    for _ in range(6):
        result = tick(env, cursor)
        cursor = result.cursor
        for request in result.run_requests:
            launch(env, request)
            launched += 1
    # batch run (fails on the poison), then one retry per session: the others succeed
    assert existing(env, ids) == {poison}
    assert backups_per_session(env) == {str(i): 1 for i in ids[1:]}
    with env.engine.connect() as conn:
        claim = (
            conn.execute(
                sa.select(catalog.marker_claim).where(
                    catalog.marker_claim.c.relation_id == str(poison)
                )
            )
            .mappings()
            .one()
        )
        abandoned = (
            conn.execute(
                sa.select(catalog.operation_log).where(
                    catalog.operation_log.c.action == "marker_abandoned"
                )
            )
            .mappings()
            .all()
        )
    assert (claim["status"], claim["attempts"]) == ("abandoned", 2)
    assert [r["relation_ids"] for r in abandoned] == [f'["{poison}"]']
    assert launched == 1 + 2 + 1  # batch, two session retries, the poison's second attempt
    assert tick(env, cursor).run_requests == []


@pytest.mark.slow
def test_a_backlog_of_5000_markers_drains_exactly_once(env, monkeypatch) -> None:
    monkeypatch.setenv("HTD_MARKER_BATCH_SIZE", "500")
    monkeypatch.setenv("HTD_MARKER_MAX_BATCHES", "4")
    now = dt.datetime.now(dt.UTC)
    rows = [
        {"name": f"s{i}", "is_test": False, "delete_marked_at": now, "delete_marked_by": "bulk"}
        for i in range(5000)
    ]
    with env.engine.begin() as conn:
        conn.execute(process_session.insert(), rows)
    cursor, runs = None, 0
    while True:
        result = tick(env, cursor)
        # an overlapping tick sees the same cursor: its requests carry the same run keys
        assert [r.run_key for r in tick(env, cursor).run_requests] == [
            r.run_key for r in result.run_requests
        ]
        cursor = result.cursor
        if not result.run_requests:
            break
        for request in result.run_requests:
            outcome = launch(env, request)
            assert outcome.success, failure_message(outcome)
            runs += 1
    assert runs == 10
    counts = backups_per_session(env)
    assert len(counts) == 5000 and set(counts.values()) == {1}
    assert env.count("process_session") == 0


def test_a_marker_left_claimed_by_a_killed_run_is_taken_over(env) -> None:
    """A run killed after it claimed a marker stays STARTED in Dagster for hours; its session
    claim's heartbeat stops. The next run holds the session, so it takes the marker over and
    backs the session up (before: skipped as "being backed up", for as long as the run looked
    alive)."""
    from htd_pipelines import backup
    from htd_pipelines.registry.spec import load_registry

    ids = seed_demo(env.engine, 2, seed=6, test_fraction=0)
    mark(env, ids)
    registry = load_registry(env.relations_file)
    first = backup.plan_backup(
        env.engine, registry, env.store(), type_name="inst", relation_ids=ids, uid=None,
        keep_source=False, run_id="killed-run", from_markers=True,
        run_status=lambda run_id: None,
    )  # fmt: skip
    assert set(first.relation_ids) == {str(i) for i in ids}
    backup.release_sessions(env.engine, first)  # as the killed run's heartbeat lapses
    second = backup.plan_backup(
        env.engine, registry, env.store(), type_name="inst", relation_ids=ids, uid=None,
        keep_source=False, run_id="next-run", from_markers=True,
        run_status=lambda run_id: "STARTED" if run_id == "killed-run" else None,
    )  # fmt: skip
    assert set(second.relation_ids) == {str(i) for i in ids}, second.skipped
    backup.release_sessions(env.engine, second)
