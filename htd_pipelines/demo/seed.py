"""Seed data for the demo application database.

* :func:`seed_demo` - a handful of realistic sessions of varied size (deterministic per ``seed``).
* :func:`seed_legacy_crontab` - legacy scheduler rows for the crontab migration command.
* :func:`seed_large_session` - one session with ``rows`` related rows, for benchmarks
  (``COPY FROM STDIN`` on PostgreSQL, batched ``executemany`` elsewhere).

Every value type the backup/restore pipelines must preserve shows up: SQL ``NULL``, unicode
(CJK, emoji, accents, tabs/newlines/backslashes), nested JSON, ``Decimal`` with 4 digits of
scale (negative and 18-digit), tz-aware UTC timestamps with microseconds, binary with
``0x00``/``0xff`` bytes and 64-bit integers beyond ``2**53``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines.demo.schema import (
    attachment,
    create_demo_schema,
    crontab,
    crontab_history,
    data_table_row,
    form_data,
    process_session,
    session_comment,
    session_node,
    session_operate_log,
    session_task,
    task_log,
    utcnow,
)

__all__ = [
    "LEGACY_CRONTAB_NAMES",
    "large_session_counts",
    "seed_demo",
    "seed_large_session",
    "seed_legacy_crontab",
]

UTC = dt.UTC
_BATCH = 5_000

# ---------------------------------------------------------------------------------------------
# value pools
# ---------------------------------------------------------------------------------------------

_PROCESSES: tuple[tuple[str, str], ...] = (
    ("purchase_request", "采购申请"),
    ("leave_request", "Demande de congé"),
    ("expense_claim", "Reisekostenabrechnung"),
    ("contract_review", "Contract review 📄"),
    ("it_ticket", "IT サポート依頼"),
    ("onboarding", "Onboarding — José Núñez"),
    ("budget_change", "예산 변경 요청"),
    ("supplier_audit", "Audit fournisseur « Élan »"),
)

_NODES: tuple[tuple[str, str, str], ...] = (
    ("start", "发起", "start"),
    ("manager_approval", "Approbation du responsable", "approval"),
    ("finance_review", "財務審査 💴", "approval"),
    ("legal_check", "Prüfung durch die Rechtsabteilung", "approval"),
    ("cc_notify", "抄送 / CC", "notify"),
    ("countersign", "会签 ✍️", "countersign"),
    ("sign_off", "Sign-off ✅", "approval"),
    ("archive", "归档", "end"),
)

_TASK_TITLES: tuple[str, ...] = (
    "审批第 {n} 号申请",
    "Vérifier la facture nº {n}",
    "Beleg {n} prüfen (Größe: groß)",
    "Follow up on item #{n} 🚀",
    "確認してください ({n})",
    "Informe del ñandú {n}",
    "Ответить на запрос {n}",
)

_COMMENTS: tuple[str, ...] = (
    "同意，请尽快处理。",
    "LGTM 👍",
    "Merci beaucoup ! Ça marche pour moi — à jeudi.",
    "Bitte Rücksprache mit Jürgen halten.",
    "見積書を添付しました 📎",
    "Family emoji 👩‍👩‍👧‍👦, flag 🇨🇳, rainbow 🏳️‍🌈 and math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    'Line one\nline two\ttabbed "quoted" back\\slash \\N not-null',
    "Ω≈ç√∫˜µ≤≥÷ — naïve café façade",
    "请在 2024-12-31 前完成，金额 ¥12,345.67。",
    "",
    "🙂",
    "A" * 300,
)

_LOG_ACTIONS: tuple[str, ...] = (
    "create",
    "assign",
    "claim",
    "comment",
    "approve",
    "reject",
    "transfer",
    "remind",
)

_LOG_MESSAGES: tuple[str | None, ...] = (
    None,
    "任务已创建",
    "Assigned to u_0001",
    "Rappel envoyé ✉️",
    "Approved with conditions: ≤ 5 000 €",
    "",
    None,
    "Rejected:\n1. missing receipt\n2. wrong cost centre\t(see C:\\temp\\x)",
    "转交给 李娜 🤝",
)

_BIG_COUNTERS: tuple[int | None, ...] = (
    9_007_199_254_740_993,  # 2**53 + 1: not representable as a float
    -9_007_199_254_740_993,
    2**63 - 1,
    -(2**63),
    0,
    -1,
    None,
    1_234_567_890_123_456_789,
)

_DECIMALS: tuple[Decimal | None, ...] = (
    Decimal("12345678901234.5678"),
    Decimal("-12345678901234.5678"),
    Decimal("99999999999999.9999"),
    Decimal("0.0001"),
    Decimal("-0.5000"),
    Decimal("0.0000"),
    None,
    Decimal("1999.9900"),
)

_RATIOS: tuple[float | None, ...] = (0.1, 1 / 3, -2.5e-10, 1e300, 0.0, None, 0.7500000000000001)

_OPERATE_ACTIONS: tuple[str, ...] = ("create", "submit", "withdraw", "urge", "modify", "view")

_FILES: tuple[tuple[str, str], ...] = (
    ("报价单-2024.pdf", "application/pdf"),
    ("résumé final (v2).docx", "application/vnd.openxmlformats-officedocument"),
    ("📷 photo.jpg", "image/jpeg"),
    ("Überweisung.xlsx", "application/vnd.ms-excel"),
    ("invoice #42.pdf", "application/pdf"),
    ("契約書_最終版.pdf", "application/pdf"),
    ("notes.txt", "text/plain"),
)

_TABLE_KEYS: tuple[str, ...] = ("line_items", "cost_split", "travel_legs", "approvers_matrix")

_PEOPLE: tuple[str, ...] = (
    "张伟",
    "Émilie Dubois",
    "Jürgen Groß",
    "山田太郎",
    "Zoë O'Brien",
    "李娜",
)

_TEST_AGES_DAYS: tuple[float, ...] = (0.1, 2.0, 8.5, 31.0, 45.0, 3.0, 120.0, 400.0, 6.9, 60.0)

#: Microseconds in ``dt.timedelta`` arithmetic.
_US = dt.timedelta(microseconds=1)


def _uid(rng: random.Random) -> str:
    return f"u_{rng.randrange(1, 10_000):04d}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _blob(rng: random.Random, size: int) -> bytes:
    """Small binary blob that always contains 0x00 and 0xff (PNG-ish header)."""
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.randbytes(size) + b"\xff\x00\xfe\x01"


def _checksum(rng: random.Random) -> bytes:
    """32 raw bytes with a 0x00 and a 0xff in them."""
    raw = bytearray(hashlib.sha256(rng.randbytes(16)).digest())
    raw[rng.randrange(0, 16)] = 0x00
    raw[rng.randrange(16, 32)] = 0xFF
    return bytes(raw)


def _decimal(rng: random.Random) -> Decimal | None:
    if rng.random() < 0.35:
        return rng.choice(_DECIMALS)
    return Decimal(rng.randrange(-(10**10), 10**12)).scaleb(-4)


def _after(rng: random.Random, start: dt.datetime, now: dt.datetime) -> dt.datetime:
    """A timestamp between ``start`` and ``now`` with random microseconds."""
    span_us = max(1, int((now - start) / _US))
    return start + dt.timedelta(microseconds=rng.randrange(span_us))


def _form_json(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "applicant": {
            "name": rng.choice(_PEOPLE),
            "dept": rng.choice(["R&D 🧪", "财务部", "Ventes"]),
        },
        "items": [
            {"sku": f"A-{rng.randrange(1000):03d}", "qty": rng.randrange(1, 20), "price": 12.5}
            for _ in range(rng.randrange(0, 4))
        ],
        "approved": rng.random() < 0.5,
        "note": rng.choice([None, "急", "n/a", "Ünïcödé ✓"]),
        "seq": n,
        "big": 9_007_199_254_740_993,
        "ratio": 1 / 3,
        "tags": rng.sample(["紧急", "review", "🔥", "q4", "été"], k=rng.randrange(0, 4)),
    }


# ---------------------------------------------------------------------------------------------
# insert helpers
# ---------------------------------------------------------------------------------------------


def _insert_returning_ids(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]]
) -> list[int]:
    """Insert ``rows`` and return their new ids, in the order of ``rows``."""
    if not rows:
        return []
    dialect = conn.dialect
    if dialect.insert_executemany_returning_sort_by_parameter_order:
        stmt = table.insert().returning(table.c.id, sort_by_parameter_order=True)
        ids: list[int] = []
        for start in range(0, len(rows), _BATCH):
            ids.extend(conn.execute(stmt, rows[start : start + _BATCH]).scalars().all())
        return ids
    return [int(conn.execute(table.insert(), row).inserted_primary_key[0]) for row in rows]


def _insert_many(conn: Connection, table: sa.Table, rows: Iterable[dict[str, Any]]) -> int:
    """Batched executemany insert; returns the number of rows inserted."""
    n = 0
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            conn.execute(table.insert(), batch)
            n += len(batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)
        n += len(batch)
    return n


# ---------------------------------------------------------------------------------------------
# seed_demo
# ---------------------------------------------------------------------------------------------

# Per-profile (min, max) counts: nodes, tasks per node, logs per task, ad-hoc tasks,
# form_data, session_comment, attachment, data_table_row, session_operate_log.
_PROFILES: dict[str, dict[str, tuple[int, int]]] = {
    "empty": {},
    "small": {
        "nodes": (1, 3),
        "tasks": (0, 2),
        "logs": (0, 2),
        "adhoc": (0, 1),
        "forms": (0, 2),
        "comments": (0, 3),
        "attachments": (0, 2),
        "rows": (0, 4),
        "oplog": (1, 3),
    },
    "medium": {
        "nodes": (3, 6),
        "tasks": (1, 3),
        "logs": (1, 3),
        "adhoc": (0, 2),
        "forms": (2, 6),
        "comments": (2, 10),
        "attachments": (1, 4),
        "rows": (5, 25),
        "oplog": (3, 8),
    },
    "large": {
        "nodes": (6, 8),
        "tasks": (2, 4),
        "logs": (1, 5),
        "adhoc": (1, 4),
        "forms": (4, 10),
        "comments": (8, 25),
        "attachments": (3, 10),
        "rows": (25, 70),
        "oplog": (5, 15),
    },
}
_PROFILE_CYCLE = ("small", "large", "empty", "medium", "small", "medium", "large", "small")


def _count(rng: random.Random, profile: dict[str, tuple[int, int]], key: str) -> int:
    lo, hi = profile.get(key, (0, 0))
    if hi == 0:
        return 0
    if key not in ("nodes", "tasks", "logs") and lo == 0 and rng.random() < 0.3:
        return 0  # some tables stay empty for some sessions
    return rng.randint(lo, hi)


#: One session to seed: its id, when it was created, and its size profile.
_Plan = tuple[int, dt.datetime, dict[str, tuple[int, int]]]


def _session_rows(
    rng: random.Random, sessions: int, test_idx: set[int], marked_idx: set[int], now: dt.datetime
) -> list[dict[str, Any]]:
    """The process_session rows, in index order (test sessions get the fixed test ages)."""
    sess_rows: list[dict[str, Any]] = []
    test_no = 0
    for i in range(sessions):
        key, label = rng.choice(_PROCESSES)
        is_test = i in test_idx
        if is_test:
            age = dt.timedelta(days=_TEST_AGES_DAYS[test_no % len(_TEST_AGES_DAYS)])
            test_no += 1
        else:
            age = dt.timedelta(days=rng.uniform(0.01, 200.0))
        created = now - age - dt.timedelta(microseconds=rng.randrange(1, 1_000_000))
        meta = None
        if rng.random() < 0.75:
            meta = {
                "source": rng.choice(["web", "mobile", "api", "导入"]),
                "form_version": rng.randrange(1, 9),
                "tags": rng.sample(["紧急", "review", "🔥", "q4", "été"], k=rng.randrange(0, 3)),
                "nested": {"a": [1, 2.5, {"b": None, "c": "ç"}], "big": 2**63 - 1},
            }
        sess_rows.append(
            {
                "name": f"{'[TEST] ' if is_test else ''}{label} #{rng.randrange(1, 100_000)}",
                "process_key": key if rng.random() < 0.9 else None,
                "status": rng.randrange(0, 5),
                "is_test": is_test,
                "creator_uid": _uid(rng) if rng.random() < 0.9 else None,
                "meta": meta,
                "created_at": created,
                "updated_at": _after(rng, created, now),
                "delete_marked_at": _after(rng, created, now) if i in marked_idx else None,
                "delete_marked_by": _uid(rng) if i in marked_idx else None,
            }
        )
    return sess_rows


def _node_rows(
    rng: random.Random, plans: list[_Plan], now: dt.datetime
) -> tuple[list[dict[str, Any]], list[int]]:
    """The session_node rows of every planned session, and the plan index of each."""
    node_rows: list[dict[str, Any]] = []
    node_owner: list[int] = []  # index into plans
    for p, (sid, created, prof) in enumerate(plans):
        for pos in range(_count(rng, prof, "nodes")):
            nkey, nname, ntype = _NODES[pos % len(_NODES)]
            node_rows.append(
                {
                    "sess_id": sid,
                    "node_key": nkey if pos < len(_NODES) else f"{nkey}_{pos}",
                    "name": nname,
                    "node_type": ntype,
                    "position": pos,
                    "config": None
                    if rng.random() < 0.15
                    else {
                        "assignees": [_uid(rng) for _ in range(rng.randrange(0, 3))],
                        "timeout_h": rng.choice([24, 48, 72.5, None]),
                        "form": {"fields": [{"key": "amount", "label": "金额", "req": True}]},
                    },
                    "created_at": _after(rng, created, now),
                }
            )
            node_owner.append(p)
    return node_rows, node_owner


def _task_rows(
    rng: random.Random, plans: list[_Plan], nodes_by_plan: dict[int, list[int]], now: dt.datetime
) -> tuple[list[dict[str, Any]], list[int]]:
    """The session_task rows (per node, and ad hoc ones), and the plan index of each."""
    task_rows: list[dict[str, Any]] = []
    task_owner: list[int] = []
    for p, (sid, created, prof) in enumerate(plans):
        node_list: list[int | None] = list(nodes_by_plan.get(p, []))
        slots: list[int | None] = []
        for nid in node_list:
            slots.extend([nid] * _count(rng, prof, "tasks"))
        slots.extend([None] * _count(rng, prof, "adhoc"))
        for nid in slots:
            t_created = _after(rng, created, now)
            task_rows.append(
                {
                    "sess_id": sid,
                    "node_id": nid,
                    "title": rng.choice(_TASK_TITLES).format(n=rng.randrange(1, 10_000)),
                    "assignee_uid": _uid(rng) if rng.random() < 0.8 else None,
                    "status": rng.randrange(0, 4),
                    "priority": rng.choice([0, 1, 2, 3, -1]),
                    "due_at": t_created + dt.timedelta(days=rng.uniform(0.5, 30))
                    if rng.random() < 0.6
                    else None,
                    "payload": None
                    if rng.random() < 0.3
                    else {"form": _form_json(rng, len(task_rows)), "round": rng.randrange(3)},
                    "created_at": t_created,
                }
            )
            task_owner.append(p)
    return task_rows, task_owner


def _log_rows(
    rng: random.Random,
    plans: list[_Plan],
    task_ids: list[int],
    task_rows: list[dict[str, Any]],
    task_owner: list[int],
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The task_log rows of every task."""
    log_rows: list[dict[str, Any]] = []
    for tid, trow, p in zip(task_ids, task_rows, task_owner, strict=True):
        prof = plans[p][2]
        for _ in range(_count(rng, prof, "logs")):
            log_rows.append(
                {
                    "task_id": tid,
                    "action": rng.choice(_LOG_ACTIONS),
                    "message": rng.choice(_LOG_MESSAGES),
                    "big_counter": rng.choice(_BIG_COUNTERS)
                    if rng.random() < 0.6
                    else rng.randrange(-(2**62), 2**62),
                    "created_at": _after(rng, trow["created_at"], now),
                }
            )
    return log_rows


def _detail_rows(
    rng: random.Random, plans: list[_Plan], now: dt.datetime
) -> tuple[
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
    list[dict[str, Any]],
]:
    """The form_data, session_comment, attachment, data_table_row and session_operate_log
    rows of every planned session."""
    forms, comments, files, trows, oplog = [], [], [], [], []
    for sid, created, prof in plans:
        for k in range(_count(rng, prof, "forms")):
            forms.append(
                {
                    "sess_id": sid,
                    "form_key": rng.choice(["main", "expense", "approval_opinion", "附表"]),
                    "data": None if rng.random() < 0.1 else _form_json(rng, k),
                    "amount": _decimal(rng),
                    "ratio": rng.choice(_RATIOS) if rng.random() < 0.5 else rng.random(),
                    "submitted_at": _after(rng, created, now) if rng.random() < 0.7 else None,
                }
            )
        for _ in range(_count(rng, prof, "comments")):
            comments.append(
                {
                    "sess_id": sid,
                    "author_uid": _uid(rng),
                    "content": rng.choice(_COMMENTS),
                    "created_at": _after(rng, created, now),
                }
            )
        for _ in range(_count(rng, prof, "attachments")):
            fname, ctype = rng.choice(_FILES)
            ext = fname.rsplit(".", 1)[-1]
            files.append(
                {
                    "sess_id": sid,
                    "file_name": fname,
                    "content_type": ctype if rng.random() < 0.9 else None,
                    "remote_url": f"https://files.example.com/htd/{sid}/{_uuid(rng)}.{ext}"
                    if rng.random() < 0.8
                    else None,
                    "size_bytes": rng.choice([0, 1, 5_368_709_120, rng.randrange(1, 10**7)]),
                    "checksum": _checksum(rng) if rng.random() < 0.8 else None,
                    "thumbnail": _blob(rng, rng.randrange(0, 48)) if rng.random() < 0.5 else None,
                    "created_at": _after(rng, created, now),
                }
            )
        tkey = rng.choice(_TABLE_KEYS)
        for r in range(_count(rng, prof, "rows")):
            trows.append(
                {
                    "sess_id": sid,
                    "table_key": tkey,
                    "row_no": r,
                    "row_data": {
                        "sku": f"SKU-{rng.randrange(10**6):06d}",
                        "desc": rng.choice(_TASK_TITLES).format(n=r),
                        "qty": rng.randrange(1, 500),
                        "unit_price": str(_decimal(rng)),
                        "discount": rng.choice([None, 0.05, 0.125]),
                        "dims": [rng.random(), rng.randrange(-5, 5), None],
                    },
                    "created_at": _after(rng, created, now),
                }
            )
        for _ in range(_count(rng, prof, "oplog")):
            oplog.append(
                {
                    "sess_id": sid,
                    "uid": _uid(rng) if rng.random() < 0.95 else None,
                    "action": rng.choice(_OPERATE_ACTIONS),
                    "detail": rng.choice([None, "{}", "状态 0 → 1", "field amount: 1.00 → 2.50"]),
                    "created_at": _after(rng, created, now),
                }
            )
    return forms, comments, files, trows, oplog


def seed_demo(
    engine: Engine,
    sessions: int = 20,
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
    marked_fraction: float = 0.0,
    now: dt.datetime | None = None,
) -> list[int]:
    """Insert ``sessions`` realistic sessions (and their related rows); return their new ids.

    Sizes vary from empty to a couple of hundred related rows; everything but the ids is
    deterministic for a given ``seed`` (and ``now``, which defaults to the current UTC time;
    ages such as "test session created 45 days ago" are relative to it).
    ``round(sessions * test_fraction)`` sessions get ``is_test=True`` with varied ages (several
    older than 30 days when there are enough). ``marked_fraction`` of the non-test sessions get
    their deletion marker set. The schema is created if missing. One transaction.
    """
    if sessions < 0:
        raise ValueError("sessions must be >= 0")
    if not 0.0 <= test_fraction <= 1.0 or not 0.0 <= marked_fraction <= 1.0:
        raise ValueError("test_fraction and marked_fraction must be within [0, 1]")
    rng = random.Random(seed)
    now = (now or utcnow()).astimezone(UTC)
    create_demo_schema(engine)

    n_test = round(sessions * test_fraction)
    test_idx = set(rng.sample(range(sessions), n_test))
    non_test = [i for i in range(sessions) if i not in test_idx]
    marked_idx = set(rng.sample(non_test, round(len(non_test) * marked_fraction)))
    profiles = [_PROFILE_CYCLE[i % len(_PROFILE_CYCLE)] for i in range(sessions)]
    rng.shuffle(profiles)

    sess_rows = _session_rows(rng, sessions, test_idx, marked_idx, now)

    with engine.begin() as conn:
        sess_ids = _insert_returning_ids(conn, process_session, sess_rows)

        # Plan every session's shape first, then insert table by table (parents first).
        plans = []
        for i, sid in enumerate(sess_ids):
            prof = _PROFILES[profiles[i]]
            plans.append((sid, sess_rows[i]["created_at"], prof))

        node_rows, node_owner = _node_rows(rng, plans, now)
        node_ids = _insert_returning_ids(conn, session_node, node_rows)
        nodes_by_plan: dict[int, list[int]] = {}
        for p, nid in zip(node_owner, node_ids, strict=True):
            nodes_by_plan.setdefault(p, []).append(nid)

        task_rows, task_owner = _task_rows(rng, plans, nodes_by_plan, now)
        task_ids = _insert_returning_ids(conn, session_task, task_rows)

        log_rows = _log_rows(rng, plans, task_ids, task_rows, task_owner, now)
        _insert_many(conn, task_log, log_rows)

        forms, comments, files, trows, oplog = _detail_rows(rng, plans, now)
        _insert_many(conn, form_data, forms)
        _insert_many(conn, session_comment, comments)
        _insert_many(conn, attachment, files)
        _insert_many(conn, data_table_row, trows)
        _insert_many(conn, session_operate_log, oplog)
    return [int(i) for i in sess_ids]


# ---------------------------------------------------------------------------------------------
# legacy crontab
# ---------------------------------------------------------------------------------------------

_LEGACY_CRONTAB: tuple[dict[str, Any], ...] = (
    {
        "name": "clear_test_sessions_daily",
        "rule": "0 3 * * *",
        "timezone": "Asia/Shanghai",
        "target": "clearTestSessions",
        "params": {"older_than_days": 7},
        "status": 1,
        "remark": "每天凌晨 3 点清理测试会话",
    },
    {
        "name": "verify_backups_nightly",
        "rule": "30 4 * * *",
        "timezone": "UTC",
        "target": "verifyBackups",
        "params": {"sample": 5},
        "status": 1,
        "remark": None,
    },
    {
        "name": "clear_test_sessions_hourly_old",
        "rule": "0 * * * *",
        "timezone": None,
        "target": "clearTestSessions",
        "params": {"older_than_days": 1},
        "status": 0,
        "remark": "disabled: superseded by clear_test_sessions_daily",
    },
    {
        "name": "send_weekly_report",
        "rule": "0 9 * * 1",
        "timezone": "Europe/Berlin",
        "target": "sendWeeklyReport",
        "params": {"to": ["ops@example.com"], "lang": "de"},
        "status": 1,
        "remark": "Wöchentlicher Bericht (unknown target)",
    },
    {
        "name": "clear_test_sessions_broken",
        "rule": "61 * * * *",
        "timezone": "Asia/Shanghai",
        "target": "clearTestSessions",
        "params": None,
        "status": 1,
        "remark": "invalid minute field",
    },
)

#: Names of the rows :func:`seed_legacy_crontab` maintains.
LEGACY_CRONTAB_NAMES: tuple[str, ...] = tuple(r["name"] for r in _LEGACY_CRONTAB)

# crontab_history.status: 1 = success, 2 = failed.
_LEGACY_HISTORY: dict[str, tuple[tuple[float, float | None, int, str | None], ...]] = {
    # (started hours ago, duration seconds, status, output)
    "clear_test_sessions_daily": (
        (48.0, 12.345678, 1, "cleared 3 test sessions (ids 101, 102, 107)"),
        (24.0, 0.5, 2, "ERROR: deadlock detected\nDETAIL: 重试后失败"),
    ),
    "verify_backups_nightly": ((23.5, 95.25, 1, "verified 5/5 backups ✓"),),
    "clear_test_sessions_hourly_old": ((24.0 * 40, None, 2, None),),
}


def seed_legacy_crontab(engine: Engine) -> dict[str, int]:
    """Insert the legacy scheduler rows (and some history) that do not exist yet.

    Idempotent by ``crontab.name``. Returns ``{name: crontab.id}`` for all legacy rows.
    """
    create_demo_schema(engine)
    now = utcnow()
    with engine.begin() as conn:
        existing = dict(
            conn.execute(
                sa.select(crontab.c.name, crontab.c.id).where(
                    crontab.c.name.in_(LEGACY_CRONTAB_NAMES)
                )
            ).all()
        )
        missing = [
            {**row, "created_at": now - dt.timedelta(days=400 - 10 * i)}
            for i, row in enumerate(_LEGACY_CRONTAB)
            if row["name"] not in existing
        ]
        new_ids = _insert_returning_ids(conn, crontab, missing)
        created = {r["name"]: int(i) for r, i in zip(missing, new_ids, strict=True)}
        history = []
        for name, cid in created.items():
            for hours_ago, duration, status, output in _LEGACY_HISTORY.get(name, ()):
                started = now - dt.timedelta(hours=hours_ago, microseconds=123_457)
                history.append(
                    {
                        "crontab_id": cid,
                        "started_at": started,
                        "finished_at": None
                        if duration is None
                        else started + dt.timedelta(seconds=duration),
                        "status": status,
                        "output": output,
                    }
                )
        _insert_many(conn, crontab_history, history)
    return {**{k: int(v) for k, v in existing.items()}, **created}


# ---------------------------------------------------------------------------------------------
# seed_large_session
# ---------------------------------------------------------------------------------------------

_LARGE_SHARES: tuple[tuple[str, float], ...] = (
    ("session_node", 0.01),
    ("session_task", 0.20),
    ("form_data", 0.12),
    ("session_comment", 0.08),
    ("attachment", 0.07),
    ("data_table_row", 0.12),
    ("task_log", 0.40),  # gets the rounding remainder
)
_LARGE_OPLOG = 5


def large_session_counts(rows: int) -> dict[str, int]:
    """How :func:`seed_large_session` splits ``rows`` over the session tables (sums to rows)."""
    if rows < 0:
        raise ValueError("rows must be >= 0")
    counts = {"session_operate_log": min(_LARGE_OPLOG, rows)}
    rest = rows - counts["session_operate_log"]
    for name, share in _LARGE_SHARES[:-1]:
        counts[name] = int(rest * share)
    counts["task_log"] = rows - sum(counts.values())
    if counts["task_log"] and not counts["session_task"]:
        counts["session_task"] = 1  # logs need a task to hang off
        counts["task_log"] -= 1
    return counts


class _Pools:
    """Precomputed values cycled through by the large-session generators (fast, deterministic)."""

    def __init__(self, rng: random.Random) -> None:
        self.json_objs: list[Any] = [_form_json(rng, n) for n in range(97)]
        self.json_objs[5] = None
        self.row_objs: list[Any] = [
            {
                "sku": f"SKU-{n:06d}",
                "desc": _TASK_TITLES[n % len(_TASK_TITLES)].format(n=n),
                "qty": rng.randrange(1, 500),
                "unit_price": str(_decimal(rng)),
                "dims": [rng.random(), n, None],
            }
            for n in range(89)
        ]
        self.config_objs: list[Any] = [
            {"assignees": [_uid(rng)], "timeout_h": rng.choice([24, 48, 72.5]), "名": "节点"}
            for _ in range(13)
        ] + [None]
        self.decimals: list[Decimal | None] = list(_DECIMALS) + [_decimal(rng) for _ in range(93)]
        self.ratios: list[float | None] = list(_RATIOS) + [rng.random() for _ in range(60)]
        self.checksums: list[bytes | None] = [_checksum(rng) for _ in range(61)] + [None] * 6
        self.thumbs: list[bytes | None] = [_blob(rng, rng.randrange(0, 40)) for _ in range(7)] + [
            None
        ] * 24
        self.uids: list[str | None] = [_uid(rng) for _ in range(50)] + [None]
        self.uuids: list[str] = [_uuid(rng) for _ in range(101)]
        self.counters: list[int | None] = list(_BIG_COUNTERS) + [
            rng.randrange(-(2**62), 2**62) for _ in range(23)
        ]

    @staticmethod
    def texts(objs: list[Any], as_text: bool) -> list[Any]:
        if not as_text:
            return objs
        return [None if o is None else json.dumps(o, ensure_ascii=False) for o in objs]


def _pick(pool: Sequence[Any], i: int, stride: int = 7919) -> Any:
    return pool[(i * stride) % len(pool)]


class _LargeRows:
    """The row generators of one large session, one method per table (see _large_generators).

    ``ids`` is read when a generator starts, so it may be filled in after the parent rows are
    inserted.
    """

    def __init__(
        self,
        sess_id: int,
        counts: dict[str, int],
        ids: dict[str, list[int]],
        rng: random.Random,
        now: dt.datetime,
        *,
        json_text: bool,
    ) -> None:
        self.sess_id = sess_id
        self.counts = counts
        self.ids = ids
        self.pools = pools = _Pools(rng)
        self.form_json = pools.texts(pools.json_objs, json_text)
        self.row_json = pools.texts(pools.row_objs, json_text)
        self.config_json = pools.texts(pools.config_objs, json_text)
        self.start = now - dt.timedelta(days=90, microseconds=rng.randrange(1, 1_000_000))
        self.span_us = int((now - self.start) / _US)

    def ts(self, i: int, n: int) -> dt.datetime:
        # increasing over the table, distinct microseconds
        return self.start + dt.timedelta(
            microseconds=(i * self.span_us) // max(n, 1) + (i * 7919) % 997
        )

    def nodes(self) -> Iterator[tuple[Any, ...]]:
        sess_id, ts, config_json = self.sess_id, self.ts, self.config_json
        n = self.counts["session_node"]
        for i, nid in enumerate(self.ids.get("session_node") or [None] * n):
            nkey, nname, ntype = _NODES[i % len(_NODES)]
            yield (nid, sess_id, f"{nkey}_{i}", nname, ntype, i, _pick(config_json, i), ts(i, n))

    def tasks(self) -> Iterator[tuple[Any, ...]]:
        sess_id, ts, form_json, uids = self.sess_id, self.ts, self.form_json, self.pools.uids
        td = dt.timedelta
        n = self.counts["session_task"]
        node_ids = self.ids["session_node"]
        n_nodes = len(node_ids)
        for i, tid in enumerate(self.ids.get("session_task") or [None] * n):
            node = node_ids[(i * n_nodes) // n] if n_nodes and i % 10 else None
            created = ts(i, n)
            yield (
                tid,
                sess_id,
                node,
                _TASK_TITLES[i % len(_TASK_TITLES)].format(n=i),
                _pick(uids, i),
                i % 4,
                (i % 5) - 1,
                created + td(days=3, microseconds=i) if i % 3 else None,
                _pick(form_json, i, 31),
                created,
            )

    def logs(self) -> Iterator[tuple[Any, ...]]:
        ts, counters = self.ts, self.pools.counters
        n = self.counts["task_log"]
        task_ids = self.ids["session_task"]
        n_tasks = len(task_ids)
        for i in range(n):
            yield (
                task_ids[(i * n_tasks) // n],
                _LOG_ACTIONS[i % len(_LOG_ACTIONS)],
                _pick(_LOG_MESSAGES, i, 5),
                _pick(counters, i, 13) if i % 4 else 9_007_199_254_740_993 + i,
                ts(i, n),
            )

    def forms(self) -> Iterator[tuple[Any, ...]]:
        sess_id, ts, form_json, pools = self.sess_id, self.ts, self.form_json, self.pools
        n = self.counts["form_data"]
        for i in range(n):
            yield (
                sess_id,
                ("main", "expense", "approval_opinion", "附表")[i % 4],
                _pick(form_json, i, 37),
                _pick(pools.decimals, i, 17),
                _pick(pools.ratios, i, 11),
                ts(i, n) if i % 5 else None,
            )

    def comments(self) -> Iterator[tuple[Any, ...]]:
        sess_id, ts = self.sess_id, self.ts
        n = self.counts["session_comment"]
        for i in range(n):
            yield (sess_id, f"u_{i % 997:04d}", _pick(_COMMENTS, i, 7), ts(i, n))

    def files(self) -> Iterator[tuple[Any, ...]]:
        sess_id, ts, pools = self.sess_id, self.ts, self.pools
        n = self.counts["attachment"]
        for i in range(n):
            fname, ctype = _FILES[i % len(_FILES)]
            ext = fname.rsplit(".", 1)[-1]
            url = (
                f"https://files.example.com/htd/{sess_id}/{_pick(pools.uuids, i)}-{i}.{ext}"
                if i % 6
                else None
            )
            yield (
                sess_id,
                fname,
                ctype,
                url,
                (i * 104_729) % 6_000_000_000,
                _pick(pools.checksums, i, 3),
                _pick(pools.thumbs, i, 5),
                ts(i, n),
            )

    def table_rows(self) -> Iterator[tuple[Any, ...]]:
        sess_id, ts, row_json = self.sess_id, self.ts, self.row_json
        n = self.counts["data_table_row"]
        for i in range(n):
            yield (sess_id, _TABLE_KEYS[(i * 4) // max(n, 1)], i, _pick(row_json, i, 3), ts(i, n))

    def oplog(self) -> Iterator[tuple[Any, ...]]:
        sess_id, ts, uids = self.sess_id, self.ts, self.pools.uids
        n = self.counts["session_operate_log"]
        for i in range(n):
            yield (
                sess_id,
                _pick(uids, i),
                _OPERATE_ACTIONS[i % len(_OPERATE_ACTIONS)],
                "bulk seeded ✓",
                ts(i, n),
            )


def _large_generators(
    sess_id: int,
    counts: dict[str, int],
    ids: dict[str, list[int]],
    rng: random.Random,
    now: dt.datetime,
    *,
    json_text: bool,
) -> dict[str, tuple[tuple[str, ...], Callable[[], Iterator[tuple[Any, ...]]]]]:
    """Per table: (columns, row generator). ``json_text`` emits JSON columns as text.

    ``ids`` holds the ids of the ``session_node`` / ``session_task`` rows; it is read when a
    generator starts, so it may be filled in after the parent rows are inserted. Node and task
    rows come with their id first (``None`` when ``ids`` has none yet).
    """
    gen = _LargeRows(sess_id, counts, ids, rng, now, json_text=json_text)
    return {
        "session_node": (
            ("id", "sess_id", "node_key", "name", "node_type", "position", "config", "created_at"),
            gen.nodes,
        ),
        "session_task": (
            (
                "id",
                "sess_id",
                "node_id",
                "title",
                "assignee_uid",
                "status",
                "priority",
                "due_at",
                "payload",
                "created_at",
            ),
            gen.tasks,
        ),
        "task_log": (("task_id", "action", "message", "big_counter", "created_at"), gen.logs),
        "form_data": (
            ("sess_id", "form_key", "data", "amount", "ratio", "submitted_at"),
            gen.forms,
        ),
        "session_comment": (("sess_id", "author_uid", "content", "created_at"), gen.comments),
        "attachment": (
            (
                "sess_id",
                "file_name",
                "content_type",
                "remote_url",
                "size_bytes",
                "checksum",
                "thumbnail",
                "created_at",
            ),
            gen.files,
        ),
        "data_table_row": (
            ("sess_id", "table_key", "row_no", "row_data", "created_at"),
            gen.table_rows,
        ),
        "session_operate_log": (("sess_id", "uid", "action", "detail", "created_at"), gen.oplog),
    }


_LARGE_ORDER = (
    "session_node",
    "session_task",
    "task_log",
    "form_data",
    "session_comment",
    "attachment",
    "data_table_row",
    "session_operate_log",
)
_TABLES = {
    t.name: t
    for t in (
        session_node,
        session_task,
        task_log,
        form_data,
        session_comment,
        attachment,
        data_table_row,
        session_operate_log,
    )
}


def _pg_reserve_ids(driver_conn: Any, table: str, n: int) -> list[int]:
    """Draw ``n`` ids from the table's serial/identity sequence (safe with concurrent inserts)."""
    if n == 0:
        return []
    with driver_conn.cursor() as cur:
        cur.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            (table, n),
        )
        return [r[0] for r in cur.fetchall()]


def _pg_copy(driver_conn: Any, table: str, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    cols = ", ".join(columns)
    with driver_conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        write = copy.write_row
        for row in rows:
            write(row)


def _pg_advance_sequences(driver_conn: Any, tables: Iterable[str]) -> None:
    """Make each table's id sequence at least ``max(id)`` (needed after COPY with explicit ids)."""
    with driver_conn.cursor() as cur:
        for table in tables:
            cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,))
            seq = cur.fetchone()[0]
            if seq is None:
                continue
            cur.execute(
                f"SELECT setval(%s::regclass, m) FROM (SELECT max(id) AS m FROM {table}) x, "
                f"{seq} s WHERE m IS NOT NULL AND (m > s.last_value OR NOT s.is_called)",
                (seq,),
            )


def seed_large_session(engine: Engine, rows: int = 1_000_000, *, seed: int = 0) -> int:
    """Insert one session whose related tables hold ``rows`` rows in total; return its id.

    The split over the tables is :func:`large_session_counts` (task_log largest, then
    session_task, form_data/data_table_row, ...). PostgreSQL uses ``COPY ... FROM STDIN``
    (ids of parent rows are drawn from their sequences first); other dialects use batched
    ``executemany``. One transaction; the schema is created if missing.
    """
    counts = large_session_counts(rows)
    rng = random.Random(seed)
    now = utcnow()
    create_demo_schema(engine)
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        created = now - dt.timedelta(days=90, seconds=1, microseconds=rng.randrange(1, 10**6))
        (sess_id,) = _insert_returning_ids(
            conn,
            process_session,
            [
                {
                    "name": f"Large session ({rows:,} rows) 📦 大会话",
                    "process_key": "bulk_benchmark",
                    "status": 1,
                    "is_test": False,
                    "creator_uid": "u_bench",
                    "meta": {"rows": rows, "seed": seed, "counts": counts},
                    "created_at": created,
                    "updated_at": now,
                }
            ],
        )
        ids: dict[str, list[int]] = {}
        gens = _large_generators(sess_id, counts, ids, rng, now, json_text=pg)
        if pg:
            driver_conn = conn.connection.driver_connection
            for name in ("session_node", "session_task"):
                ids[name] = _pg_reserve_ids(driver_conn, name, counts[name])
            for name in _LARGE_ORDER:
                cols, gen = gens[name]
                if counts[name]:
                    _pg_copy(driver_conn, name, cols, gen())
            _pg_advance_sequences(driver_conn, _LARGE_ORDER)
        else:
            for name in _LARGE_ORDER:
                cols, gen = gens[name]
                table = _TABLES[name]
                if name in ("session_node", "session_task"):  # parents: need their new ids
                    body = cols[1:]
                    rows_ = [dict(zip(body, r[1:], strict=True)) for r in gen()]
                    ids[name] = _insert_returning_ids(conn, table, rows_)
                elif counts[name]:
                    _insert_many(conn, table, (dict(zip(cols, r, strict=True)) for r in gen()))
    return int(sess_id)
