"""How each SQL column travels in a snapshot: its exact Arrow type and the expression that reads it.

Every extraction path (the PostgreSQL fast path and the portable one) casts its batches to the
schema built here, so a snapshot's bytes do not depend on the path that wrote them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

SQL_TYPE_META = b"htd.sql_type"
KIND_META = b"htd.kind"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    arrow: pa.DataType
    kind: str  # how values are carried: native | text (JSON, UUID, ... carried as their text)
    sql_type: str
    nullable: bool

    def field(self) -> pa.Field:
        meta = {SQL_TYPE_META: self.sql_type.encode(), KIND_META: self.kind.encode()}
        return pa.field(self.name, self.arrow, nullable=self.nullable, metadata=meta)


def _integer_type(t: sa.types.TypeEngine) -> pa.DataType:
    unsigned = bool(getattr(t, "unsigned", False))
    if isinstance(t, sa.BigInteger | mysql.BIGINT):
        return pa.uint64() if unsigned else pa.int64()
    if isinstance(t, sa.SmallInteger | mysql.TINYINT | mysql.SMALLINT):
        return pa.int32() if unsigned else pa.int16()
    return pa.int64() if unsigned else pa.int32()


def _sqlite_stored_type(t: sa.types.TypeEngine) -> tuple[pa.DataType, str] | None:
    """SQLite stores dates as text and NUMERIC as REAL/INTEGER: carry what is stored,
    so that a restore writes back the very same representation (None: no special case)."""
    if isinstance(t, sa.DateTime | sa.Date | sa.Time):
        return pa.string(), "text"
    if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float):
        return pa.float64(), "native"
    return None


def _numeric_type(t: sa.Numeric) -> tuple[pa.DataType, str]:
    precision, scale = t.precision, t.scale or 0
    if precision and precision <= 38:
        return pa.decimal128(precision, scale), "native"
    if precision and precision <= 76:
        return pa.decimal256(precision, scale), "native"
    return pa.string(), "text"  # unbounded NUMERIC: exact as text


def _temporal_type(t: sa.types.TypeEngine, dialect_name: str) -> tuple[pa.DataType, str] | None:
    """Timestamps, dates and times carried natively (None: not one of those, or a time with
    a time zone or MySQL's TIME, which are carried as text)."""
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if t.timezone else None), "native"
    if isinstance(t, sa.Date):
        return pa.date32(), "native"
    if isinstance(t, sa.Time) and dialect_name != "mysql" and not t.timezone:
        return pa.time64("us"), "native"
    return None


def arrow_for(t: sa.types.TypeEngine, dialect_name: str) -> tuple[pa.DataType, str]:
    """(arrow type, kind) for a reflected SQL type."""
    if dialect_name == "sqlite":
        stored = _sqlite_stored_type(t)
        if stored is not None:
            return stored
    if isinstance(t, sa.JSON | postgresql.JSONB | postgresql.JSON):
        return pa.string(), "text"
    if isinstance(t, sa.Boolean):
        return pa.bool_(), "native"
    if isinstance(t, sa.Integer):
        return _integer_type(t), "native"
    if isinstance(t, sa.Float | sa.Double | postgresql.DOUBLE_PRECISION):
        return pa.float64(), "native"
    if isinstance(t, sa.Numeric):
        return _numeric_type(t)
    temporal = _temporal_type(t, dialect_name)
    if temporal is not None:
        return temporal
    if isinstance(t, sa.LargeBinary | sa.types._Binary):
        return pa.binary(), "native"
    if isinstance(t, sa.String | sa.Enum):
        return pa.string(), "native"
    # Anything else (UUID, INTERVAL, arrays, geometry, TIME WITH TIME ZONE, MySQL TIME...):
    # carried as its text form.
    return pa.string(), "text"


def column_spec(column: sa.Column, dialect: sa.engine.Dialect) -> ColumnSpec:
    arrow, kind = arrow_for(column.type, dialect.name)
    try:
        sql_type = column.type.compile(dialect=dialect)
    except Exception:  # noqa: BLE001 - some reflected types cannot compile; keep their repr
        sql_type = repr(column.type)
    return ColumnSpec(str(column.name), arrow, kind, sql_type, bool(column.nullable))


def table_schema(specs: list[ColumnSpec]) -> pa.Schema:
    return pa.schema([s.field() for s in specs])


def select_expression(column: sa.ColumnElement, spec: ColumnSpec) -> sa.ColumnElement:
    """The expression that reads a column as its snapshot value."""
    if spec.kind == "text":
        return sa.cast(column, sa.Text).label(spec.name)
    if pa.types.is_floating(spec.arrow):  # MySQL DOUBLE reflects as asdecimal=True
        return sa.type_coerce(column, sa.Double(asdecimal=False)).label(spec.name)
    return column.label(spec.name)


def python_value(value: object, arrow: pa.DataType) -> object:
    """Normalize one driver value to what pyarrow accepts for the column's Arrow type."""
    if value is None:
        return None
    if pa.types.is_time(arrow) and isinstance(value, dt.timedelta):
        return (dt.datetime.min + value).time()
    if pa.types.is_timestamp(arrow) and isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if pa.types.is_timestamp(arrow) and isinstance(value, dt.datetime):
        if arrow.tz and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        if not arrow.tz and value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None)
    if pa.types.is_date(arrow) and isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    if pa.types.is_string(arrow) and not isinstance(value, str):
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("utf-8")
        return str(value)
    if pa.types.is_binary(arrow) and isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def value_bytes(arr: pa.Array) -> tuple[np.ndarray, memoryview]:
    """A string or binary array's values laid end to end, without copying: (offsets, data),
    offsets (len + 1 of them, starting at 0) into data. Slices and large types included."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    dtype, width = (np.int64, 8) if large else (np.int32, 4)
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=dtype, count=len(arr) + 1, offset=arr.offset * width
    )
    lo, hi = int(offsets[0]), int(offsets[-1])
    buffer = arr.buffers()[2]
    data = memoryview(buffer)[lo:hi] if buffer is not None else memoryview(b"")
    return offsets - lo, data
