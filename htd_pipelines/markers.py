"""Deletion markers: read them from the root table, and claim them so that one marker never
produces two backups (overlapping ticks, a daemon restart, a retry racing a slow run)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from htd_pipelines.registry.resolved import ResolvedType
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import marker_claim

FAILED_STATES = {"FAILURE", "CANCELED"}


@dataclass(frozen=True)
class Marker:
    relation_id: str
    key: object
    marked_at: object  # the marker column's value, as the database returns it
    marked_by: str | None

    @property
    def token(self) -> str:
        """The marker as text: identifies this marker of this session."""
        value = self.marked_at
        return value.isoformat() if hasattr(value, "isoformat") else str(value)


def marker_columns(rtype: ResolvedType) -> tuple[sa.Column, sa.Column, sa.Column | None]:
    life = rtype.btype.lifecycle
    if not life.delete_marker:
        raise ValueError(f"type {rtype.btype.name!r} declares no lifecycle delete_marker")
    root = rtype.root.table
    by = root.c[life.delete_marker_by] if life.delete_marker_by else None
    return root.c[rtype.root.rule.key], root.c[life.delete_marker], by


def _markers(engine: Engine, rtype: ResolvedType, stmt: sa.Select) -> list[Marker]:
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [Marker(str(r[0]), r[0], r[1], r[2] if len(r) > 2 else None) for r in rows]


def _select(rtype: ResolvedType) -> sa.Select:
    key, marker, by = marker_columns(rtype)
    cols = [key, marker] + ([by] if by is not None else [])
    return sa.select(*cols).where(marker.is_not(None)).order_by(marker, key)


def new_markers(
    engine: Engine, rtype: ResolvedType, after: tuple[object, object] | None, limit: int
) -> list[Marker]:
    """Markers strictly after the (marked_at, key) cursor, in marker order."""
    key, marker, _ = marker_columns(rtype)
    stmt = _select(rtype).limit(limit)
    if after is not None:
        at, last = after
        stmt = stmt.where(sa.or_(marker > at, sa.and_(marker == at, key > last)))
    return _markers(engine, rtype, stmt)


def stale_markers(
    engine: Engine,
    rtype: ResolvedType,
    upto: tuple[object, object] | None,
    older_than: object,
    limit: int,
) -> list[Marker]:
    """Markers the sensor already launched (<= cursor) whose session still exists though the
    marker is older than `older_than`: their run failed, or never ran."""
    if upto is None:
        return []
    key, marker, _ = marker_columns(rtype)
    at, last = upto
    stmt = (
        _select(rtype)
        .where(marker < older_than)
        .where(sa.or_(marker < at, sa.and_(marker == at, key <= last)))
        .limit(limit)
    )
    return _markers(engine, rtype, stmt)


def current_markers(engine: Engine, rtype: ResolvedType, ids: list) -> dict[str, Marker]:
    key, _, _ = marker_columns(rtype)
    stmt = _select(rtype).where(key.in_(ids))
    return {m.relation_id: m for m in _markers(engine, rtype, stmt)}


@dataclass(frozen=True)
class ClaimOutcome:
    claimed: list[str]
    skipped: list[tuple[str, str]]  # (relation id, reason)
    problems: list[tuple[str, str]]  # skipped for a reason worth a run failure


def claim_markers(
    engine: Engine,
    rtype: ResolvedType,
    ids: list,
    *,
    run_id: str,
    run_status: Callable[[str], str | None],
    max_attempts: int,
    sessions_held: bool = False,
) -> ClaimOutcome:
    """Claim each session's current marker for this run; see the module docstring.

    `sessions_held`: the caller holds the sessions' claims (store/session_claims.py), so a
    marker claimed by another run that did not finish it is not being worked on, whatever
    Dagster says of that run (a killed run stays STARTED until run monitoring fails it, for
    hours): it is taken over, counted as an attempt."""
    type_name = rtype.btype.name
    current = current_markers(engine, rtype, ids)
    claimed, skipped, problems = [], [], []
    catalog.ensure_catalog(engine)
    for rid in dict.fromkeys(str(i) for i in ids):
        m = current.get(rid)
        if m is None:
            problems.append((rid, "the session no longer exists or its marker was cleared"))
            continue
        ident = (
            (marker_claim.c.type == type_name)
            & (marker_claim.c.relation_id == rid)
            & (marker_claim.c.marked_at == m.token)
        )
        with engine.begin() as conn:
            row = conn.execute(sa.select(marker_claim).where(ident)).mappings().first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            marker_claim.insert().values(
                                type=type_name,
                                relation_id=rid,
                                marked_at=m.token,
                                run_id=run_id,
                                attempts=1,
                                status="claimed",
                                claimed_at=catalog.utcnow(),
                            )
                        )
                    claimed.append(rid)
                    continue
                except sa.exc.IntegrityError:
                    row = conn.execute(sa.select(marker_claim).where(ident)).mappings().one()
            if row["status"] == "done":
                skipped.append((rid, f"already backed up by run {row['run_id']}"))
                continue
            if row["status"] == "abandoned":
                problems.append((rid, f"abandoned after {row['attempts']} failed attempts"))
                continue
            status = run_status(row["run_id"])
            if status is not None and status not in FAILED_STATES and not sessions_held:
                skipped.append((rid, f"being backed up by run {row['run_id']} ({status})"))
                continue
            if row["attempts"] >= max_attempts:
                conn.execute(marker_claim.update().where(ident).values(status="abandoned"))
                problems.append((rid, f"abandoned after {row['attempts']} failed attempts"))
                continue
            taken = conn.execute(
                marker_claim.update()
                .where(ident, marker_claim.c.run_id == row["run_id"])
                .values(run_id=run_id, attempts=row["attempts"] + 1, claimed_at=catalog.utcnow())
            ).rowcount
            if taken == 1:
                claimed.append(rid)
            else:
                skipped.append((rid, "claimed by another run meanwhile"))
    return ClaimOutcome(claimed, skipped, problems)


def finish_claims(conn: Connection, type_name: str, relation_ids: list[str], run_id: str) -> None:
    """Mark this run's claims done (in the delete's transaction: done iff deleted)."""
    conn.execute(
        marker_claim.update()
        .where(
            marker_claim.c.type == type_name,
            marker_claim.c.relation_id.in_(relation_ids),
            marker_claim.c.run_id == run_id,
        )
        .values(status="done")
    )


def utc_cutoff(minutes: float, naive: bool) -> dt.datetime:
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes)
    return cutoff.replace(tzinfo=None) if naive else cutoff


def claims_for(engine: Engine, type_name: str, markers: list[Marker]) -> dict[tuple, dict]:
    """Claim rows of these markers, by (relation_id, token)."""
    if not markers:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(marker_claim).where(
                marker_claim.c.type == type_name,
                marker_claim.c.relation_id.in_([m.relation_id for m in markers]),
            )
        ).mappings()
        return {(r["relation_id"], r["marked_at"]): dict(r) for r in rows}


def abandon(engine: Engine, type_name: str, marker: Marker, attempts: int) -> bool:
    """Give a marker up after its last attempt failed; True the first time (report it once)."""
    with engine.begin() as conn:
        changed = conn.execute(
            marker_claim.update()
            .where(
                marker_claim.c.type == type_name,
                marker_claim.c.relation_id == marker.relation_id,
                marker_claim.c.marked_at == marker.token,
                marker_claim.c.status == "claimed",
            )
            .values(status="abandoned")
        ).rowcount
        if changed:
            catalog.log_operation(
                conn,
                action="marker_abandoned",
                status="failed",
                type_name=type_name,
                relation_ids=[marker.relation_id],
                message=f"deletion marker {marker.token} abandoned after {attempts} failed "
                "attempts; fix the cause and set the marker again",
            )
    return bool(changed)
