"""One backup or restore of a session at a time, whatever launched it (CLI, UI, sensor,
schedule, a batch): a claim row per (type, relation id) in the application database, taken
before the work starts and released when it ends.

A claim held by another run makes the second one wait for nothing: it is refused (or, for a
batch of marked sessions, the session is left out) with a message naming the run that holds
it. While a process holds claims, a thread of its own refreshes their heartbeat every third
of HTD_CLAIM_STALE_SECONDS (on SQLite, which has one writer, the run's steps do). A claim
whose run is over (failed or canceled in Dagster) is taken over at once, and one whose
heartbeat is older than HTD_CLAIM_STALE_SECONDS (its process was killed, the run was never
launched, or it is unknown to this Dagster instance) is taken over then. Nothing here depends
on the run queue's tag limits.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from htd_pipelines import settings
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import session_claim

OVER_STATES = {"SUCCESS", "FAILURE", "CANCELED"}

RunStatus = Callable[[str], str | None]


class SessionBusy(RuntimeError):
    """The session is being backed up or restored by another run."""


def _holder_gone(row: dict, run_status: RunStatus | None, stale_after: int) -> bool:
    status = run_status(row["run_id"]) if run_status is not None else None
    if status is not None:
        return status in OVER_STATES
    age = catalog.utcnow() - row["heartbeat_at"]
    return age > dt.timedelta(seconds=stale_after)


def claim(
    engine: Engine,
    type_name: str,
    relation_ids: Iterable[str],
    run_id: str,
    action: str,
    *,
    run_status: RunStatus | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Claim each session for `run_id`: (claimed ids, {busy id: why}). Re-entrant for the
    same run. Each id is claimed in a transaction of its own (committed at once, so that
    another run sees it)."""
    catalog.ensure_catalog(engine)
    stale_after = settings.claim_stale_seconds()
    claimed: list[str] = []
    busy: dict[str, str] = {}
    for rid in dict.fromkeys(str(r) for r in relation_ids):
        ident = sa.and_(session_claim.c.type == type_name, session_claim.c.relation_id == rid)
        now = catalog.utcnow()
        with engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(
                        session_claim.insert().values(
                            type=type_name, relation_id=rid, run_id=run_id, action=action,
                            claimed_at=now, heartbeat_at=now,
                        )
                    )  # fmt: skip
                claimed.append(rid)
                continue
            except sa.exc.IntegrityError:
                row = conn.execute(sa.select(session_claim).where(ident)).mappings().first()
            if row is None or row["run_id"] == run_id:  # released meanwhile, or ours already
                if row is not None:
                    conn.execute(session_claim.update().where(ident).values(heartbeat_at=now))
                claimed.append(rid)
                continue
            if not _holder_gone(dict(row), run_status, stale_after):
                busy[rid] = (
                    f"session {type_name} {rid} is being {_verb(row['action'])} by run "
                    f"{row['run_id']} (since {row['claimed_at']:%Y-%m-%d %H:%M:%S} UTC)"
                )
                continue
            taken = conn.execute(
                session_claim.update()
                .where(ident, session_claim.c.run_id == row["run_id"])
                .values(run_id=run_id, action=action, claimed_at=now, heartbeat_at=now)
            ).rowcount
            if taken == 1:
                claimed.append(rid)
            else:
                busy[rid] = f"session {type_name} {rid} was claimed by another run meanwhile"
    _HEARTBEAT.hold(engine, type_name, claimed, run_id)
    return claimed, busy


def _verb(action: str) -> str:
    return {"backup": "backed up", "restore": "restored"}.get(action, action)


def claim_all(
    engine: Engine,
    type_name: str,
    relation_ids: Iterable[str],
    run_id: str,
    action: str,
    *,
    run_status: RunStatus | None = None,
) -> list[str]:
    """Claim every session or none: SessionBusy naming the run that holds one."""
    claimed, busy = claim(engine, type_name, relation_ids, run_id, action, run_status=run_status)
    if busy:
        release(engine, type_name, claimed, run_id)
        raise SessionBusy("; ".join(busy.values()) + "; nothing was done")
    return claimed


def refresh(engine: Engine, type_name: str, relation_ids: Iterable[str], run_id: str) -> None:
    """The run is alive: its claims' heartbeat moves on (each op of a backup calls this)."""
    ids = [str(r) for r in relation_ids]
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(
            session_claim.update()
            .where(
                session_claim.c.type == type_name,
                session_claim.c.relation_id.in_(ids),
                session_claim.c.run_id == run_id,
            )
            .values(heartbeat_at=catalog.utcnow())
        )


def release(engine: Engine, type_name: str, relation_ids: Iterable[str], run_id: str) -> None:
    """Give the sessions back (only the claims this run holds)."""
    ids = [str(r) for r in relation_ids]
    if not ids:
        return
    _HEARTBEAT.drop(type_name, ids, run_id)
    with engine.begin() as conn:
        conn.execute(
            session_claim.delete().where(
                session_claim.c.type == type_name,
                session_claim.c.relation_id.in_(ids),
                session_claim.c.run_id == run_id,
            )
        )


def release_run(engine: Engine, run_id: str) -> None:
    """Every claim a run holds, released (the run failed part-way)."""
    _HEARTBEAT.drop_run(run_id)
    catalog.ensure_catalog(engine)
    with engine.begin() as conn:
        conn.execute(session_claim.delete().where(session_claim.c.run_id == run_id))


class _Heartbeats:
    """The claims this process holds, refreshed by one daemon thread while there are any."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str, str], Engine] = {}  # (type, relation id, run) -> engine
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, engine: Engine, type_name: str, ids: list[str], run_id: str) -> None:
        # SQLite has one writer: a second thread's write would make the run's own
        # read-then-write transactions fail at once ("database is locked"); there the run's
        # steps refresh the heartbeat themselves (refresh() at every extract)
        if not ids or engine.dialect.name == "sqlite":
            return
        with self._lock:
            for rid in ids:
                self._held[(type_name, rid, run_id)] = engine
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="htd-claim-heartbeat", daemon=True
                )
                self._thread.start()

    def drop(self, type_name: str, ids: list[str], run_id: str) -> None:
        with self._lock:
            for rid in ids:
                self._held.pop((type_name, rid, run_id), None)

    def drop_run(self, run_id: str) -> None:
        with self._lock:
            for k in [k for k in self._held if k[2] == run_id]:
                self._held.pop(k, None)

    def _run(self) -> None:
        failures = 0
        while True:
            interval = max(1.0, settings.claim_stale_seconds() / 3)
            threading.Event().wait(interval)
            with self._lock:
                held = dict(self._held)
                if not held:
                    self._thread = None
                    return
            groups: dict[tuple[int, str, str], tuple[Engine, list[str]]] = {}
            for (type_name, rid, run_id), engine in held.items():
                groups.setdefault((id(engine), type_name, run_id), (engine, []))[1].append(rid)
            try:  # one UPDATE per run and type, not per session (SQLite has one writer)
                for (_, type_name, run_id), (engine, rids) in groups.items():
                    for start in range(0, len(rids), 500):
                        refresh(engine, type_name, rids[start : start + 500], run_id)
                failures = 0
            except sa.exc.SQLAlchemyError:  # the database is away: try again, then give up
                failures += 1
                if failures >= 5:
                    with self._lock:
                        self._held.clear()
                        self._thread = None
                    return


_HEARTBEAT = _Heartbeats()
