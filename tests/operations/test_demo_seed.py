"""The demo application database: schema and seed data on SQLite, PostgreSQL and MariaDB.

PostgreSQL/MariaDB run when reachable (``HTD_TEST_PG_URL`` / ``HTD_TEST_MARIADB_URL``,
defaulting to the local servers), each in a freshly created database dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from htd_pipelines.demo import SESSION_LINKS, SESSION_TABLES, create_demo_schema, metadata
from htd_pipelines.demo.schema import (
    attachment,
    crontab,
    crontab_history,
    form_data,
    process_session,
    session_comment,
    session_task,
    task_log,
)
from htd_pipelines.demo.seed import (
    LEGACY_CRONTAB_NAMES,
    large_session_counts,
    seed_demo,
    seed_large_session,
    seed_legacy_crontab,
)
from htd_pipelines.dialects.engine import create_engine
from tests.support.dbs import DIALECTS, drop_database, new_database, require_server

UTC = dt.UTC

@pytest.fixture(scope="module", params=list(DIALECTS))
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """An engine on a fresh, empty database with the demo schema, per dialect."""
    require_server(request.param)
    url = new_database(request.param, tmp_path_factory.mktemp("demo"))
    eng = create_engine(url)
    try:
        create_demo_schema(eng)
        yield eng
    finally:
        eng.dispose()
        drop_database(url)


def _count(conn: sa.Connection, table: str, sess_ids: list[int]) -> dict[int, int]:
    """Rows per session in a session-owned table (task_log through its task)."""
    if table == "task_log":
        stmt = (
            sa.select(session_task.c.sess_id, sa.func.count())
            .select_from(task_log.join(session_task, task_log.c.task_id == session_task.c.id))
            .where(session_task.c.sess_id.in_(sess_ids))
            .group_by(session_task.c.sess_id)
        )
    else:
        t = metadata.tables[table]
        stmt = (
            sa.select(t.c.sess_id, sa.func.count())
            .where(t.c.sess_id.in_(sess_ids))
            .group_by(t.c.sess_id)
        )
    counts = {sid: 0 for sid in sess_ids}
    counts.update({int(sid): int(n) for sid, n in conn.execute(stmt).all()})
    return counts


def test_schema_created(engine: Engine) -> None:
    create_demo_schema(engine)  # idempotent
    insp = sa.inspect(engine)
    assert set(metadata.tables) <= set(insp.get_table_names())
    assert set(SESSION_TABLES) == set(SESSION_LINKS)
    assert "process_session" not in SESSION_TABLES

    index_names: list[str] = []
    for name, table in metadata.tables.items():
        index_names += [ix.name for ix in table.indexes]
        for fk in insp.get_foreign_keys(name):
            assert not (fk.get("options") or {}).get("ondelete"), (name, fk)
    assert len(index_names) == len(set(index_names))
    for table, (parent, column, parent_col) in SESSION_LINKS.items():
        fks = insp.get_foreign_keys(table)
        assert any(
            fk["referred_table"] == parent
            and fk["constrained_columns"] == [column]
            and fk["referred_columns"] == [parent_col]
            for fk in fks
        ), (table, fks)
        indexed = {tuple(ix["column_names"]) for ix in insp.get_indexes(table)}
        assert (column,) in indexed


def test_seed_demo_sessions_and_related_rows(engine: Engine) -> None:
    now = dt.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    ids = seed_demo(engine, 20, seed=7, test_fraction=0.25, now=now)
    assert len(ids) == 20 and len(set(ids)) == 20

    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                process_session.c.id, process_session.c.is_test, process_session.c.created_at
            ).where(process_session.c.id.in_(ids))
        ).all()
        assert {r.id for r in rows} == set(ids)
        tests = [r for r in rows if r.is_test]
        assert len(tests) == 5
        ages = [now - r.created_at for r in tests]
        assert any(a > dt.timedelta(days=30) for a in ages)
        assert any(a < dt.timedelta(days=7) for a in ages)
        assert all(
            r.created_at.tzinfo is not None and r.created_at.utcoffset() == dt.timedelta()
            for r in rows
        )

        per_table = {t: _count(conn, t, ids) for t in SESSION_TABLES}
    totals = {sid: sum(per_table[t][sid] for t in SESSION_TABLES) for sid in ids}
    assert sum(totals.values()) > 0
    assert min(totals.values()) == 0  # an empty session
    assert max(totals.values()) >= 50  # and some big ones
    for table in SESSION_TABLES:  # every table has rows, and some sessions have none there
        assert any(per_table[table].values()), table
        assert not all(per_table[table].values()), table

    # Deterministic for a seed (apart from the database ids).
    again = seed_demo(engine, 20, seed=7, test_fraction=0.25, now=now)
    with engine.connect() as conn:
        again_tables = {t: _count(conn, t, again) for t in SESSION_TABLES}
        names = dict(
            conn.execute(
                sa.select(process_session.c.id, process_session.c.name).where(
                    process_session.c.id.in_(ids + again)
                )
            ).all()
        )
    for a, b in zip(ids, again, strict=True):
        assert names[a] == names[b]
        assert [per_table[t][a] for t in SESSION_TABLES] == [
            again_tables[t][b] for t in SESSION_TABLES
        ]


def test_values_round_trip(engine: Engine) -> None:
    seed_demo(engine, 8, seed=5)
    created = dt.datetime(
        2024, 2, 29, 23, 59, 59, 123457, tzinfo=dt.timezone(dt.timedelta(hours=8))
    )
    meta = {"名": "测试 🧪", "nested": {"a": [1, 2.5, None, True], "big": 2**63 - 1}, "é": "à"}
    blob = b"\x00\xff\x00binary\x01\xfe"
    checksum = bytes(range(32))
    with engine.begin() as conn:
        sid = conn.execute(
            process_session.insert().returning(process_session.c.id),
            {
                "name": "Ünïcödé 会话 🚀",
                "is_test": True,
                "meta": meta,
                "created_at": created,
                "updated_at": created,
            },
        ).scalar_one()
        tid = conn.execute(
            session_task.insert().returning(session_task.c.id),
            {"sess_id": sid, "title": "任务 ✅", "created_at": created},
        ).scalar_one()
        conn.execute(
            task_log.insert(),
            [
                {"task_id": tid, "action": "a", "big_counter": 9_007_199_254_740_993},
                {"task_id": tid, "action": "b", "big_counter": -(2**63), "message": None},
            ],
        )
        conn.execute(
            form_data.insert(),
            [
                {"sess_id": sid, "form_key": "k", "amount": Decimal("12345678901234.5678")},
                {"sess_id": sid, "form_key": "k", "amount": Decimal("-0.0001"), "data": None},
            ],
        )
        conn.execute(
            attachment.insert(),
            {"sess_id": sid, "file_name": "报价单.pdf", "checksum": checksum, "thumbnail": blob},
        )
        conn.execute(
            session_comment.insert(),
            {"sess_id": sid, "author_uid": "u", "content": "👩‍👩‍👧‍👦 naïve 中文\n\t\\"},
        )

    with engine.connect() as conn:
        s = conn.execute(sa.select(process_session).where(process_session.c.id == sid)).one()
        assert s.name == "Ünïcödé 会话 🚀"
        assert s.is_test is True
        assert s.meta == meta
        assert s.created_at == created
        assert s.created_at.tzinfo is not None and s.created_at.utcoffset() == dt.timedelta()
        assert s.created_at.microsecond == 123457
        assert s.delete_marked_at is None
        logs = conn.execute(
            sa.select(task_log.c.big_counter, task_log.c.message)
            .where(task_log.c.task_id == tid)
            .order_by(task_log.c.id)
        ).all()
        assert [r.big_counter for r in logs] == [9_007_199_254_740_993, -(2**63)]
        assert logs[1].message is None
        forms = conn.execute(
            sa.select(form_data.c.amount, form_data.c.data)
            .where(form_data.c.sess_id == sid)
            .order_by(form_data.c.id)
        ).all()
        assert [f.amount for f in forms] == [Decimal("12345678901234.5678"), Decimal("-0.0001")]
        assert all(isinstance(f.amount, Decimal) for f in forms)
        assert str(forms[0].amount) == "12345678901234.5678"
        assert forms[1].data is None
        att = conn.execute(sa.select(attachment).where(attachment.c.sess_id == sid)).one()
        assert att.checksum == checksum and att.thumbnail == blob
        assert att.created_at.tzinfo is not None
        content = conn.execute(
            sa.select(session_comment.c.content).where(session_comment.c.sess_id == sid)
        ).scalar_one()
        assert content == "👩‍👩‍👧‍👦 naïve 中文\n\t\\"

        # The seeded data carries the awkward values too.
        seeded_amounts = conn.execute(sa.select(form_data.c.amount)).scalars().all()
        assert any(a is not None and a.as_tuple().exponent == -4 for a in seeded_amounts)
        assert None in seeded_amounts
        counters = conn.execute(sa.select(task_log.c.big_counter)).scalars().all()
        assert any(c is not None and c > 2**53 for c in counters)
        assert any(c is not None and c < 0 for c in counters)
        sums = conn.execute(sa.select(attachment.c.checksum)).scalars().all()
        assert any(c is not None and b"\x00" in c for c in sums) and None in sums
        urls = conn.execute(sa.select(attachment.c.remote_url)).scalars().all()
        assert any(u and u.startswith("https://files.example.com/htd/") for u in urls)


def test_foreign_keys_hold(engine: Engine) -> None:
    seed_demo(engine, 6, seed=3)
    with engine.connect() as conn:
        for table, (parent, column, parent_col) in SESSION_LINKS.items():
            child, par = metadata.tables[table], metadata.tables[parent]
            orphans = conn.execute(
                sa.select(sa.func.count())
                .select_from(child.outerjoin(par, child.c[column] == par.c[parent_col]))
                .where(par.c[parent_col].is_(None))
            ).scalar_one()
            assert orphans == 0, table
        node = metadata.tables["session_node"]
        bad_nodes = conn.execute(
            sa.select(sa.func.count())
            .select_from(session_task.join(node, session_task.c.node_id == node.c.id))
            .where(node.c.sess_id != session_task.c.sess_id)
        ).scalar_one()
        assert bad_nodes == 0
        n_logs = conn.execute(sa.select(sa.func.count()).select_from(task_log)).scalar_one()
        assert n_logs > 0


def test_legacy_crontab_idempotent(engine: Engine) -> None:
    first = seed_legacy_crontab(engine)
    second = seed_legacy_crontab(engine)
    assert first == second and set(first) == set(LEGACY_CRONTAB_NAMES)
    with engine.connect() as conn:
        rows = {r.name: r for r in conn.execute(sa.select(crontab)).all()}
        n_hist = conn.execute(sa.select(sa.func.count()).select_from(crontab_history)).scalar_one()
    assert len(rows) == len(LEGACY_CRONTAB_NAMES)
    daily = next(
        r
        for r in rows.values()
        if r.target == "clearTestSessions" and r.status == 1 and r.rule == "0 3 * * *"
    )
    assert daily.timezone == "Asia/Shanghai" and daily.params == {"older_than_days": 7}
    targets = {r.target for r in rows.values()}
    assert {"clearTestSessions", "verifyBackups", "sendWeeklyReport"} <= targets
    assert any(r.status == 0 for r in rows.values())
    assert any(r.rule == "61 * * * *" for r in rows.values())
    assert n_hist >= 2


def test_large_session(engine: Engine) -> None:
    rows = 20_000
    expected = large_session_counts(rows)
    assert sum(expected.values()) == rows
    assert max(expected, key=expected.get) == "task_log"

    sid = seed_large_session(engine, rows=rows)
    with engine.connect() as conn:
        got = {t: _count(conn, t, [sid])[sid] for t in SESSION_TABLES}
        sample = conn.execute(
            sa.select(form_data.c.amount, form_data.c.data, form_data.c.submitted_at)
            .where(form_data.c.sess_id == sid)
            .limit(50)
        ).all()
    assert got == expected
    assert abs(sum(got.values()) - rows) <= rows * 0.01
    assert any(isinstance(r.amount, Decimal) for r in sample)
    assert any(isinstance(r.data, dict) for r in sample)
    assert any(r.submitted_at is None for r in sample)
    assert all(r.submitted_at is None or r.submitted_at.tzinfo is not None for r in sample)

    # Ordinary inserts still get fresh ids afterwards (sequences advanced past COPYed ids).
    more = seed_demo(engine, 3, seed=11)
    assert len(set(more)) == 3 and sid not in more
