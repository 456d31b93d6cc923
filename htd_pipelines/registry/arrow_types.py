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
from sqlalchemy.ext.compiler import compiles

SQL_TYPE_META = b"htd.sql_type"
KIND_META = b"htd.kind"

# How values are carried (ColumnSpec.kind; docs/types.md has the table per dialect):
NATIVE = "native"  # the Arrow type itself
TEXT = "text"  # the server's exact text form (JSON, UUID, INTERVAL, arrays, SET, ...)
STORED = "stored"  # SQLite: the stored value, which must be of the column's storage class
TAGGED = "tagged"  # SQLite NUMERIC affinity / no type: "<class>:<value>", any storage class


class TypeRefused(ValueError):
    """A column type that cannot be carried exactly on every path (refused when resolved)."""


class ValueRefused(ValueError):
    """A value that cannot be carried exactly (refused at extract, before anything is
    deleted); the message names the table, column, key and value."""

    def __init__(self, column: str, value: object, why: str, key: dict | None = None) -> None:
        self.column, self.value, self.why, self.key = column, value, why, key
        super().__init__(self.describe())

    def describe(self, table: str | None = None) -> str:
        where = f"table {table}, " if table else ""
        key = f", row {self.key}" if self.key is not None else ""
        return (
            f"{where}column {self.column}{key}: value {self.value!r} cannot be carried exactly "
            f"({self.why}); nothing was backed up or deleted"
        )


class Geometry(sa.types.UserDefinedType):
    """MariaDB/MySQL spatial columns (reflected through engine.py's ischema_names): carried
    as the server's own bytes (4-byte SRID + WKB), which it takes back as they are."""

    cache_ok = True
    name = "GEOMETRY"

    def get_col_spec(self, **_kw: object) -> str:
        return self.name


MYSQL_SPATIAL = {
    n: type(n.upper(), (Geometry,), {"name": n.upper(), "cache_ok": True})
    for n in (
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
    )
}


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


def sqlite_affinity(declared: str | None) -> str:
    """SQLite's column affinity of a declared type (sqlite.org/datatype3.html, 3.1)."""
    if not declared:
        return "blob"
    d = declared.upper()
    if "INT" in d:
        return "integer"
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return "text"
    if "BLOB" in d:
        return "blob"
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return "real"
    return "numeric"


def _sqlite_type(t: sa.types.TypeEngine, declared: str | None) -> tuple[pa.DataType, str]:
    """SQLite stores any value in any column, converting by the column's affinity. Columns
    of INTEGER, REAL, TEXT and declared BLOB affinity carry their stored value natively
    (int64, float64, text, bytes), refusing at extract a value of another storage class;
    NUMERIC affinity (NUMERIC, DECIMAL, BOOLEAN, DATE..., JSON) and columns without a
    declared type carry every value tagged with its storage class (`tag`), so that the
    restore binds the very same class back."""
    if isinstance(t, sa.types.NullType):
        declared = None
    affinity = sqlite_affinity(declared)
    if affinity == "integer":
        return pa.int64(), STORED
    if affinity == "real":
        return pa.float64(), STORED
    if affinity == "text":
        return pa.string(), STORED
    if affinity == "blob" and declared:
        return pa.binary(), STORED
    return pa.string(), TAGGED


def tag(value: object) -> str | None:
    """A SQLite value as tagged text: i:<int>, r:<shortest exact float>, t:<text>, b:<hex>."""
    if value is None:
        return None
    if isinstance(value, bool | int):
        return f"i:{int(value)}"
    if isinstance(value, float):
        return f"r:{value!r}"
    if isinstance(value, str):
        return f"t:{value}"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"b:{bytes(value).hex()}"
    raise TypeError(f"not a SQLite value: {value!r}")


def untag(text: str | None) -> object:
    """The SQLite value of a tagged text (`tag`'s inverse)."""
    if text is None:
        return None
    cls, value = text[:2], text[2:]
    if cls == "i:":
        return int(value)
    if cls == "r:":
        return float(value)
    if cls == "t:":
        return value
    if cls == "b:":
        return bytes.fromhex(value)
    raise ValueError(f"not a tagged SQLite value: {text!r}")


def _numeric_type(t: sa.Numeric) -> tuple[pa.DataType, str]:
    precision, scale = t.precision, t.scale or 0
    if precision and 0 <= scale <= precision <= 38:
        return pa.decimal128(precision, scale), NATIVE
    if precision and 0 <= scale <= precision <= 76:
        return pa.decimal256(precision, scale), NATIVE
    return pa.string(), TEXT  # unbounded NUMERIC (or a negative scale): exact as text


def _float_type(t: sa.types.TypeEngine) -> pa.DataType:
    """float32 for single precision (PostgreSQL real, MySQL FLOAT up to 24 bits), float64
    otherwise: every value of the column is then exactly an Arrow value."""
    if isinstance(t, sa.Double | mysql.DOUBLE | mysql.REAL | postgresql.DOUBLE_PRECISION):
        return pa.float64()
    if isinstance(t, postgresql.REAL | sa.REAL):
        return pa.float32()
    if isinstance(t, mysql.FLOAT) and (t.precision is None or t.precision <= 24):
        return pa.float32()
    return pa.float64()


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


def arrow_for(
    t: sa.types.TypeEngine, dialect_name: str, declared: str | None = None
) -> tuple[pa.DataType, str]:
    """(arrow type, kind) for a reflected SQL type (`declared`: its SQL, for SQLite)."""
    if dialect_name == "sqlite":
        return _sqlite_type(t, declared)
    if isinstance(t, Geometry):
        return pa.binary(), NATIVE
    if isinstance(t, mysql.BIT):
        return pa.uint64(), NATIVE  # read as CAST(.. AS UNSIGNED), written back as a number
    if isinstance(t, sa.JSON | postgresql.JSONB | postgresql.JSON | mysql.SET):
        return pa.string(), TEXT
    if isinstance(t, sa.Boolean):
        return pa.bool_(), "native"
    if isinstance(t, sa.Integer):
        return _integer_type(t), "native"
    if isinstance(t, sa.Float | sa.Double | postgresql.DOUBLE_PRECISION):
        return _float_type(t), NATIVE
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
    """How `column` travels; TypeRefused (naming the column and its SQL type) for a type that
    cannot be carried exactly on every path."""
    try:
        sql_type = column.type.compile(dialect=dialect)
    except Exception:  # noqa: BLE001 - some reflected types cannot compile; keep their repr
        sql_type = repr(column.type)
    declared = None if isinstance(column.type, sa.types.NullType) else sql_type
    if dialect.name in ("mysql", "mariadb") and isinstance(column.type, sa.types.NullType):
        # a type SQLAlchemy does not know: its CAST(.. AS CHAR) may fail or lose bytes
        raise TypeRefused(
            f"column {column.name}: type {sql_type} is not known and cannot be carried exactly"
        )
    arrow, kind = arrow_for(column.type, dialect.name, declared)
    return ColumnSpec(str(column.name), arrow, kind, sql_type, bool(column.nullable))


def table_schema(specs: list[ColumnSpec]) -> pa.Schema:
    return pa.schema([s.field() for s in specs])


class _ExactDouble(sa.sql.expression.FunctionElement):
    """A single-precision float read as the double holding exactly its value (the servers'
    text form of a float4 / FLOAT keeps only 6 to 9 digits)."""

    type = sa.Double(asdecimal=False)
    inherit_cache = True
    name = "htd_exact_double"


@compiles(_ExactDouble)
def _exact_double(
    element: _ExactDouble, compiler: sa.sql.compiler.SQLCompiler, **kw: object
) -> str:
    arg = compiler.process(next(iter(element.clauses)), **kw)
    if compiler.dialect.name in ("mysql", "mariadb"):
        return f"CAST({arg} AS DOUBLE)"
    return f"CAST({arg} AS DOUBLE PRECISION)"


def select_expression(column: sa.ColumnElement, spec: ColumnSpec) -> sa.ColumnElement:
    """The expression that reads a column as its snapshot value (the same on every path)."""
    t = getattr(column, "type", None)
    if spec.kind == TEXT:
        return sa.type_coerce(sa.cast(column, sa.Text), sa.Text).label(spec.name)
    if spec.kind in (STORED, TAGGED):  # SQLite: the stored value, no type processing
        return sa.type_coerce(column, sa.types.NullType()).label(spec.name)
    if isinstance(t, mysql.BIT):
        return sa.cast(column, mysql.INTEGER(unsigned=True)).label(spec.name)
    if isinstance(t, Geometry):
        return sa.type_coerce(column, sa.LargeBinary()).label(spec.name)
    if spec.arrow == pa.float32():
        return _ExactDouble(column).label(spec.name)
    if pa.types.is_floating(spec.arrow):  # MySQL DOUBLE reflects as asdecimal=True
        return sa.type_coerce(column, sa.Double(asdecimal=False)).label(spec.name)
    if isinstance(t, sa.Enum | sa.String):  # the label as stored, no lookup of SQLAlchemy's
        return sa.type_coerce(column, sa.String()).label(spec.name)
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
