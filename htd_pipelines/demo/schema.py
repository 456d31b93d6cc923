"""The demo application database: a portable model of the htdNew process module.

One *session* (``process_session``) is a process instance; everything in :data:`SESSION_TABLES`
belongs to exactly one session, directly through ``sess_id`` or (``task_log``) through its task.
``crontab`` / ``crontab_history`` are the legacy scheduler tables and are not session-owned.

The same :data:`metadata` works on SQLite, PostgreSQL and MariaDB/MySQL. Portable types:

* :class:`UTCDateTime` - ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL, ``DATETIME(6)`` on
  MariaDB/MySQL, ``DATETIME`` text on SQLite; naive UTC is stored where the database has no
  zone type, and tz-aware UTC ``datetime`` values come back on every dialect.
* :class:`ExactNumeric` - ``NUMERIC(p, s)`` on PostgreSQL and MariaDB; on SQLite (whose
  NUMERIC affinity keeps only 15 significant digits) the decimal is stored as text so that
  ``Decimal`` values round-trip exactly.
* :data:`BigId` - ``BIGINT`` (``BIGSERIAL`` / ``AUTO_INCREMENT`` for primary keys) except on
  SQLite, where only an ``INTEGER PRIMARY KEY`` autoincrements (it is 64-bit there anyway).
* :data:`Double` - 8-byte floats (``FLOAT`` is single precision on MariaDB).
* :data:`JSONType` - ``sa.JSON`` with Python ``None`` stored as SQL ``NULL`` (not JSON ``null``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect, Engine

__all__ = [
    "SESSION_LINKS",
    "SESSION_TABLES",
    "BigId",
    "ExactNumeric",
    "UTCDateTime",
    "attachment",
    "create_demo_schema",
    "crontab",
    "crontab_history",
    "data_table_row",
    "drop_demo_schema",
    "form_data",
    "metadata",
    "process_session",
    "session_comment",
    "session_node",
    "session_operate_log",
    "session_task",
    "task_log",
    "utcnow",
]

UTC = dt.UTC
_MYSQL = ("mysql", "mariadb")


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp with time zone that round-trips tz-aware UTC values on every dialect.

    Naive values on bind are taken to be UTC. Results are always tz-aware UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"UTCDateTime expects datetime, got {type(value).__name__}")
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # e.g. a raw SQLite value fetched through text()
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ExactNumeric(sa.types.TypeDecorator):
    """``NUMERIC(precision, scale)`` returning ``Decimal`` exactly, SQLite included.

    SQLite would coerce a NUMERIC value to an 8-byte float; there the column is ``VARCHAR`` and
    holds the canonical decimal text (quantized to ``scale`` digits).
    """

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int = 18, scale: int = 4) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale
        self._quantum = Decimal(1).scaleb(-scale)

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(self.precision + 2))
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            d = value if isinstance(value, Decimal) else Decimal(str(value))
            return str(d.quantize(self._quantum))
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        d = value if isinstance(value, Decimal) else Decimal(str(value))
        return d.quantize(self._quantum)


#: 64-bit integer primary/foreign key; INTEGER on SQLite so that the PK is the rowid.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: 8-byte float everywhere.
Double = sa.Double()
#: JSON whose Python ``None`` is SQL ``NULL``.
JSONType = sa.JSON(none_as_null=True)
#: Unicode-safe text columns; MariaDB tables are created utf8mb4.
_TABLE_OPTS: dict[str, str] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
    "mariadb_collate": "utf8mb4_unicode_ci",
}

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _pk() -> sa.Column[Any]:
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def _sess_fk() -> sa.Column[Any]:
    return sa.Column(
        "sess_id",
        BigId,
        sa.ForeignKey("process_session.id"),
        nullable=False,
    )


def _created_at() -> sa.Column[Any]:
    return sa.Column("created_at", UTCDateTime(), nullable=False, default=utcnow)


process_session = sa.Table(
    "process_session",
    metadata,
    _pk(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("process_key", sa.String(64)),
    sa.Column("status", sa.SmallInteger, nullable=False, default=0, server_default="0"),
    sa.Column("is_test", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("creator_uid", sa.String(64)),
    sa.Column("meta", JSONType, nullable=True),
    _created_at(),
    sa.Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
    sa.Column("delete_marked_at", UTCDateTime(), nullable=True),
    sa.Column("delete_marked_by", sa.String(64), nullable=True),
    sa.Index("ix_process_session_is_test_created_at", "is_test", "created_at"),
    sa.Index("ix_process_session_delete_marked_at", "delete_marked_at"),
    **_TABLE_OPTS,
)

session_node = sa.Table(
    "session_node",
    metadata,
    _pk(),
    _sess_fk(),
    sa.Column("node_key", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("node_type", sa.String(32), nullable=False, default="approval"),
    sa.Column("position", sa.Integer, nullable=False, default=0),
    sa.Column("config", JSONType, nullable=True),
    _created_at(),
    sa.Index("ix_session_node_sess_id", "sess_id"),
    **_TABLE_OPTS,
)

session_task = sa.Table(
    "session_task",
    metadata,
    _pk(),
    _sess_fk(),
    sa.Column("node_id", BigId, sa.ForeignKey("session_node.id"), nullable=True),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("assignee_uid", sa.String(64), nullable=True),
    sa.Column("status", sa.SmallInteger, nullable=False, default=0),
    sa.Column("priority", sa.SmallInteger, nullable=False, default=0),
    sa.Column("due_at", UTCDateTime(), nullable=True),
    sa.Column("payload", JSONType, nullable=True),
    _created_at(),
    sa.Index("ix_session_task_sess_id", "sess_id"),
    sa.Index("ix_session_task_node_id", "node_id"),
    **_TABLE_OPTS,
)

task_log = sa.Table(
    "task_log",
    metadata,
    _pk(),
    sa.Column("task_id", BigId, sa.ForeignKey("session_task.id"), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("big_counter", sa.BigInteger, nullable=True),
    _created_at(),
    sa.Index("ix_task_log_task_id", "task_id"),
    **_TABLE_OPTS,
)

form_data = sa.Table(
    "form_data",
    metadata,
    _pk(),
    _sess_fk(),
    sa.Column("form_key", sa.String(64), nullable=False),
    sa.Column("data", JSONType, nullable=True),
    sa.Column("amount", ExactNumeric(18, 4), nullable=True),
    sa.Column("ratio", Double, nullable=True),
    sa.Column("submitted_at", UTCDateTime(), nullable=True),
    sa.Index("ix_form_data_sess_id", "sess_id"),
    **_TABLE_OPTS,
)

session_comment = sa.Table(
    "session_comment",
    metadata,
    _pk(),
    _sess_fk(),
    sa.Column("author_uid", sa.String(64), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    _created_at(),
    sa.Index("ix_session_comment_sess_id", "sess_id"),
    **_TABLE_OPTS,
)

attachment = sa.Table(
    "attachment",
    metadata,
    _pk(),
    _sess_fk(),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("content_type", sa.String(100), nullable=True),
    sa.Column("remote_url", sa.String(500), nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("checksum", sa.LargeBinary(32), nullable=True),
    sa.Column("thumbnail", sa.LargeBinary, nullable=True),
    _created_at(),
    sa.Index("ix_attachment_sess_id", "sess_id"),
    **_TABLE_OPTS,
)

data_table_row = sa.Table(
    "data_table_row",
    metadata,
    _pk(),
    _sess_fk(),
    sa.Column("table_key", sa.String(64), nullable=False),
    sa.Column("row_no", sa.Integer, nullable=False, default=0),
    sa.Column("row_data", JSONType, nullable=True),
    _created_at(),
    sa.Index("ix_data_table_row_sess_id", "sess_id"),
    **_TABLE_OPTS,
)

session_operate_log = sa.Table(
    "session_operate_log",
    metadata,
    _pk(),
    _sess_fk(),
    sa.Column("uid", sa.String(64), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
    _created_at(),
    sa.Index("ix_session_operate_log_sess_id", "sess_id"),
    **_TABLE_OPTS,
)

crontab = sa.Table(
    "crontab",
    metadata,
    _pk(),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=True),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("params", JSONType, nullable=True),
    sa.Column("status", sa.SmallInteger, nullable=False, default=1, server_default="1"),
    sa.Column("remark", sa.Text, nullable=True),
    _created_at(),
    sa.UniqueConstraint("name", name="uq_crontab_name"),
    **_TABLE_OPTS,
)

crontab_history = sa.Table(
    "crontab_history",
    metadata,
    _pk(),
    sa.Column("crontab_id", BigId, sa.ForeignKey("crontab.id"), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("output", sa.Text, nullable=True),
    sa.Index("ix_crontab_history_crontab_id", "crontab_id"),
    **_TABLE_OPTS,
)

#: Session-owned tables in parent-first (insert) order; delete in reverse order.
SESSION_TABLES: tuple[str, ...] = (
    "session_node",
    "session_task",
    "task_log",
    "form_data",
    "session_comment",
    "attachment",
    "data_table_row",
    "session_operate_log",
)

#: For each session-owned table: (parent table, linking column, parent column).
SESSION_LINKS: dict[str, tuple[str, str, str]] = {
    "session_node": ("process_session", "sess_id", "id"),
    "session_task": ("process_session", "sess_id", "id"),
    "task_log": ("session_task", "task_id", "id"),
    "form_data": ("process_session", "sess_id", "id"),
    "session_comment": ("process_session", "sess_id", "id"),
    "attachment": ("process_session", "sess_id", "id"),
    "data_table_row": ("process_session", "sess_id", "id"),
    "session_operate_log": ("process_session", "sess_id", "id"),
}


def create_demo_schema(engine: Engine) -> None:
    """Create every demo table that does not exist yet (idempotent)."""
    metadata.create_all(engine, checkfirst=True)


def drop_demo_schema(engine: Engine) -> None:
    """Drop every demo table that exists (children first)."""
    metadata.drop_all(engine, checkfirst=True)
