"""The catalog in the application database: `back_up` (one row per backup version) and
`htd_operation_log` (who did what, with which run). Both are created on first use."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine

from htd_pipelines.registry.relation_ids import MAX_LENGTH as RELATION_ID_MAX
from htd_pipelines.store.manifest import Manifest

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

back_up = sa.Table(
    "back_up",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("relation_id", sa.String(RELATION_ID_MAX), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("uid", sa.String(64)),
    sa.Column("manifest", _LONG_TEXT, nullable=False),
    sa.Column("snapshot_uri", sa.String(1000), nullable=False),
    sa.Column("location", sa.String(500), nullable=False),
    sa.Column("total_rows", sa.BigInteger, nullable=False, default=0),
    sa.Column("total_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("run_id", sa.String(64)),
    sa.Column("source_deleted", sa.SmallInteger, nullable=False, default=0),
    # 1: the backup's delete failed (its rows changed meanwhile, a lock, a timeout): a copy of
    # a session that is still live, not offered as the newest backup (find_backups)
    sa.Column("delete_failed", sa.SmallInteger, nullable=False, default=0, server_default="0"),
    sa.Column("is_reback", sa.SmallInteger, nullable=False, default=0),
    sa.Column("restored_at", _TS),
    sa.Column("restored_by", sa.String(64)),
    sa.Column("restore_run_id", sa.String(64)),
    sa.Column("restore_requested_at", _TS),
    sa.Column("restore_requested_by", sa.String(64)),
    sa.Column("created_at", _TS, nullable=False),
    sa.UniqueConstraint("type", "relation_id", "version", name="uq_back_up_version"),
    sa.Index("ix_back_up_relation", "type", "relation_id"),
)

operation_log = sa.Table(
    "htd_operation_log",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("uid", sa.String(64)),
    sa.Column("type", sa.String(64)),
    sa.Column("relation_ids", _LONG_TEXT),
    sa.Column("backup_ids", _LONG_TEXT),
    sa.Column("counts", _LONG_TEXT),
    sa.Column("run_id", sa.String(64)),
    sa.Column("message", _LONG_TEXT),
)

CATALOG_TABLES = (
    "back_up",
    "htd_operation_log",
    "htd_marker_claim",
    "htd_verification",
    "htd_session_claim",
)
_READY: set[str] = set()
_LOCK = threading.Lock()


class CatalogError(RuntimeError):
    """A backup is unknown, or its catalog state forbids the operation."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def ensure_catalog(engine: Engine) -> None:
    key = engine.url.render_as_string(hide_password=False)
    if key in _READY:
        return
    with _LOCK:
        _create_tables(engine)
        _widen_relation_ids(engine)
        _add_delete_failed(engine)
        _READY.add(key)


def _widen_relation_ids(engine: Engine) -> None:
    """Catalogs created before relation ids of up to RELATION_ID_MAX characters had
    VARCHAR(191) relation_id columns: widen them (PostgreSQL: a catalog change only; MariaDB:
    in place). SQLite does not enforce a VARCHAR length."""
    if engine.dialect.name not in ("postgresql", "mysql", "mariadb"):
        return
    inspector = sa.inspect(engine)
    for table in (back_up, marker_claim):
        column = next(c for c in inspector.get_columns(table.name) if c["name"] == "relation_id")
        length = getattr(column["type"], "length", None)
        if length is None or length >= RELATION_ID_MAX:
            continue
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    f"ALTER TABLE {table.name} ALTER COLUMN relation_id "
                    f"TYPE VARCHAR({RELATION_ID_MAX})"
                )
            else:
                conn.exec_driver_sql(
                    f"ALTER TABLE {table.name} MODIFY relation_id "
                    f"VARCHAR({RELATION_ID_MAX}) NOT NULL"
                )


def _create_tables(engine: Engine, attempts: int = 3) -> None:
    """The catalog's tables, created where missing. Two processes doing so at once (two
    first runs on a new database) race between the check and the CREATE: the loser's CREATE
    fails although the table is now there, so it checks again."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except sa.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _add_delete_failed(engine: Engine) -> None:
    """Catalogs created before `back_up.delete_failed` get the column (0 for every row)."""
    names = {c["name"] for c in sa.inspect(engine).get_columns(back_up.name)}
    if "delete_failed" in names:
        return
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"ALTER TABLE {back_up.name} ADD COLUMN delete_failed SMALLINT NOT NULL DEFAULT 0"
            )
    except sa.exc.DBAPIError:  # another process added it a moment ago
        if "delete_failed" not in {c["name"] for c in sa.inspect(engine).get_columns(back_up.name)}:
            raise


def mark_delete_failed(engine: Engine, backup_ids: list[int]) -> None:
    """The delete of these backups failed: their sessions are still live (see back_up)."""
    with engine.begin() as conn:
        conn.execute(
            back_up.update()
            .where(back_up.c.id.in_(backup_ids), back_up.c.source_deleted == 0)
            .values(delete_failed=1)
        )


def forget_catalog_cache() -> None:
    _READY.clear()


@dataclass(frozen=True)
class BackupRecord:
    id: int
    type: str
    relation_id: str
    version: int
    uid: str | None
    is_reback: int
    created_at: dt.datetime
    restored_at: dt.datetime | None
    restored_by: str | None
    restore_requested_at: dt.datetime | None
    restore_requested_by: str | None
    source_deleted: int
    total_rows: int
    total_bytes: int
    run_id: str | None
    manifest_json: str
    delete_failed: int = 0

    @property
    def state(self) -> str:
        """What became of the backup: restored / source deleted / delete failed / kept."""
        if self.is_reback:
            return "restored"
        if self.source_deleted:
            return "source deleted"
        return "delete failed" if self.delete_failed else "kept"

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_json(self.manifest_json)

    def summary(self) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "relation_id": self.relation_id,
            "version": self.version,
            "uid": self.uid,
            "is_reback": self.is_reback,
            "source_deleted": self.source_deleted,
            "delete_failed": self.delete_failed,
            "state": self.state,
            "rows": self.total_rows,
            "bytes": self.total_bytes,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "restored_at": self.restored_at.isoformat() if self.restored_at else None,
            "restored_by": self.restored_by,
            "restore_requested_at": (
                self.restore_requested_at.isoformat() if self.restore_requested_at else None
            ),
            "run_id": self.run_id,
        }


def _record(row: sa.Row) -> BackupRecord:
    m = row._mapping
    return BackupRecord(
        id=int(m["id"]),
        type=m["type"],
        relation_id=m["relation_id"],
        version=int(m["version"]),
        uid=m["uid"],
        is_reback=int(m["is_reback"]),
        created_at=m["created_at"],
        restored_at=m["restored_at"],
        restored_by=m["restored_by"],
        restore_requested_at=m["restore_requested_at"],
        restore_requested_by=m["restore_requested_by"],
        source_deleted=int(m["source_deleted"]),
        total_rows=int(m["total_rows"]),
        total_bytes=int(m["total_bytes"]),
        run_id=m["run_id"],
        manifest_json=m["manifest"],
        delete_failed=int(m.get("delete_failed") or 0),
    )


def next_versions(conn: Connection, type_name: str, relation_ids: list[str]) -> dict[str, int]:
    """The next free version number per relation id (1 for a first backup)."""
    rows = conn.execute(
        sa.select(back_up.c.relation_id, sa.func.max(back_up.c.version))
        .where(back_up.c.type == type_name, back_up.c.relation_id.in_(relation_ids))
        .group_by(back_up.c.relation_id)
    ).all()
    found = {r[0]: int(r[1]) for r in rows}
    return {rid: found.get(rid, 0) + 1 for rid in relation_ids}


def insert_backup(conn: Connection, manifest: Manifest, manifest_json: str | None = None) -> int:
    result = conn.execute(
        back_up.insert().values(
            type=manifest.type,
            relation_id=manifest.relation_id,
            version=manifest.version,
            uid=manifest.uid,
            manifest=manifest_json or manifest.to_json(),
            snapshot_uri=manifest.snapshot_uri,
            location=manifest.location,
            total_rows=manifest.total_rows,
            total_bytes=manifest.total_bytes,
            run_id=manifest.run_id,
            is_reback=0,
            source_deleted=0,
            created_at=utcnow(),
        )
    )
    return int(result.inserted_primary_key[0])


def mark_source_deleted(conn: Connection, backup_ids: list[int]) -> None:
    conn.execute(back_up.update().where(back_up.c.id.in_(backup_ids)).values(source_deleted=1))


def get_backup(conn: Connection, backup_id: int) -> BackupRecord:
    row = conn.execute(sa.select(back_up).where(back_up.c.id == backup_id)).first()
    if row is None:
        raise CatalogError(f"backup {backup_id} does not exist in the back_up catalog")
    return _record(row)


def find_backups(
    conn: Connection,
    *,
    type_name: str | None = None,
    relation_id: str | None = None,
    version: int | None = None,
    limit: int | None = None,
    usable_only: bool = False,
) -> list[BackupRecord]:
    """Newest first. `usable_only`: leave out backups whose delete failed (copies of a live
    session that a later backup supersedes)."""
    stmt = sa.select(back_up).order_by(back_up.c.id.desc())
    if usable_only:
        stmt = stmt.where(back_up.c.delete_failed == 0)
    if type_name is not None:
        stmt = stmt.where(back_up.c.type == type_name)
    if relation_id is not None:
        stmt = stmt.where(back_up.c.relation_id == str(relation_id))
    if version is not None:
        stmt = stmt.where(back_up.c.version == version)
    if limit:
        stmt = stmt.limit(limit)
    return [_record(r) for r in conn.execute(stmt)]


def log_operation(
    conn: Connection,
    *,
    action: str,
    status: str = "ok",
    uid: str | None = None,
    type_name: str | None = None,
    relation_ids: list | None = None,
    backup_ids: list | None = None,
    counts: dict | None = None,
    run_id: str | None = None,
    message: str | None = None,
) -> None:
    conn.execute(
        operation_log.insert().values(
            created_at=utcnow(),
            action=action,
            status=status,
            uid=uid,
            type=type_name,
            relation_ids=json.dumps([str(r) for r in relation_ids or []]),
            backup_ids=json.dumps(list(backup_ids or [])),
            counts=json.dumps(counts or {}, sort_keys=True),
            run_id=run_id,
            message=message,
        )
    )


def log_operation_now(engine: Engine, **kwargs: Any) -> None:
    """Write an operation-log row in its own transaction (survives a rolled-back operation)."""
    ensure_catalog(engine)
    with engine.begin() as conn:
        log_operation(conn, **kwargs)


def request_restore(conn: Connection, backup_id: int, uid: str | None) -> BackupRecord:
    """Mark a backup for restore (what restore_request_sensor picks up)."""
    record = get_backup(conn, backup_id)
    if record.is_reback:
        raise CatalogError(
            f"backup {backup_id} was already restored at {record.restored_at} by "
            f"{record.restored_by}; it cannot be requested again"
        )
    conn.execute(
        back_up.update()
        .where(back_up.c.id == backup_id)
        .values(restore_requested_at=utcnow(), restore_requested_by=uid)
    )
    return get_backup(conn, backup_id)


def restore_requests_after(
    conn: Connection, after: tuple[dt.datetime, int] | None, limit: int
) -> list[BackupRecord]:
    """Requested restores in request order, strictly after the (requested_at, id) cursor."""
    stmt = (
        sa.select(back_up)
        .where(back_up.c.restore_requested_at.is_not(None))
        .order_by(back_up.c.restore_requested_at, back_up.c.id)
        .limit(limit)
    )
    if after is not None:
        at, last_id = after
        stmt = stmt.where(
            sa.or_(
                back_up.c.restore_requested_at > at,
                sa.and_(back_up.c.restore_requested_at == at, back_up.c.id > last_id),
            )
        )
    return [_record(r) for r in conn.execute(stmt)]


# One row per deletion marker (type, relation id, marker value): which run owns it. A marker is
# claimed by at most one run at a time, taken over only from a failed run, at most N attempts.
marker_claim = sa.Table(
    "htd_marker_claim",
    metadata,
    sa.Column("type", sa.String(64), primary_key=True),
    sa.Column("relation_id", sa.String(RELATION_ID_MAX), primary_key=True),
    sa.Column("marked_at", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # claimed | done | abandoned
    sa.Column("claimed_at", _TS, nullable=False),
)


# One row per session being backed up or restored: which run holds it (store/session_claims.py).
session_claim = sa.Table(
    "htd_session_claim",
    metadata,
    sa.Column("type", sa.String(64), primary_key=True),
    sa.Column("relation_id", sa.String(RELATION_ID_MAX), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # backup | restore
    sa.Column("claimed_at", _TS, nullable=False),
    sa.Column("heartbeat_at", _TS, nullable=False),
)


# One row per verification of a backup: when, by which run, the outcome.
verification = sa.Table(
    "htd_verification",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("backup_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("verified_at", _TS, nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # ok | failed
    sa.Column("full_restore", sa.SmallInteger, nullable=False, default=0),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("message", _LONG_TEXT),
)
