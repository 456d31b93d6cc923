"""Hypothesis strategies: random root/child/grandchild schemas, column types and values per dialect.

A :class:`Case` is everything one example needs: the tables (DDL, primary key, the column that
refers to the parent), the rows of two sessions (``tag`` 0: the one backed up and deleted, ``tag``
1: a second session that must stay as it is), an unrelated table, and optional triggers.
Values are generated per SQL type, extremes included; a value the server rejects at INSERT is
replaced by NULL when the rows are written (see ``test_round_trip.insert_rows``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from dataclasses import dataclass, field

from hypothesis import strategies as st

# ------------------------------------------------------------------------------------ values

INT_RANGES = {
    "tinyint": (-(2**7), 2**7 - 1),
    "smallint": (-(2**15), 2**15 - 1),
    "mediumint": (-(2**23), 2**23 - 1),
    "int": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}

EXTREME_TEXTS = [
    "",
    " ",
    "trailing  ",
    "\ufeffleading BOM",
    "four-byte \U0001f600 \U0001d11e \U00020000",
    "control \x01\x02\x1b\x7f",
    "tab\tnew\nline\r\nend",
    "NULL",
    "\\N",
    "'\"\\,;",
    "中文 ǅ İ ß",
    "e\u0301 combining",
    "x" * 3000,
    "\u2028\u2029\u200b",
]
EXTREME_BYTES = [b"", b"\x00", b"\xff" * 8, bytes(range(256)), b"\\N", b"a,b\n\"c'", b"\x80\xfe"]


def ints(kind: str, unsigned: bool = False) -> st.SearchStrategy:
    lo, hi = INT_RANGES[kind]
    if unsigned:
        lo, hi = 0, hi * 2 + 1
    return st.one_of(st.sampled_from([lo, hi, 0, 1, -1 if lo < 0 else 2]), st.integers(lo, hi))


def texts(max_size: int | None = None, *, nul: bool = True) -> st.SearchStrategy:
    alphabet = st.characters(
        blacklist_categories=("Cs",), **({} if nul else {"blacklist_characters": "\x00"})
    )
    extremes = [t for t in EXTREME_TEXTS if max_size is None or len(t) <= max_size]
    return st.one_of(st.sampled_from(extremes), st.text(alphabet, max_size=max_size or 40))


def binaries(max_size: int | None = None) -> st.SearchStrategy:
    extremes = [b for b in EXTREME_BYTES if max_size is None or len(b) <= max_size]
    return st.one_of(st.sampled_from(extremes), st.binary(max_size=max_size or 64))


def floats(width: int = 64) -> st.SearchStrategy:
    special = [0.0, -0.0, float("nan"), float("inf"), float("-inf")]
    if width == 64:
        special += [1.7976931348623157e308, -5e-324, 2.2250738585072014e-308, 0.1, 1e16 + 2]
    else:
        special += [3.4028234663852886e38, 1.401298464324817e-45, 0.10000000149011612]
    return st.one_of(st.sampled_from(special), st.floats(width=width))


def decimals(precision: int, scale: int) -> st.SearchStrategy:
    with decimal.localcontext() as ctx:
        ctx.prec = precision + 10
        top = decimal.Decimal(10) ** (precision - scale) - decimal.Decimal(1).scaleb(-scale)
    return st.one_of(
        st.sampled_from(
            [
                top,
                -top,
                decimal.Decimal(0),
                decimal.Decimal(1).scaleb(-scale),
                decimal.Decimal("NaN"),
            ]
        ),
        st.decimals(min_value=-top, max_value=top, places=scale),
    )


def unbounded_decimals() -> st.SearchStrategy:
    extremes = [
        "0.000",
        "-0",
        "1E+100",
        "123.4500",
        "NaN",
        "Infinity",
        "-Infinity",
        "3.14159265358979323846264338327950288419716939937510582097494459230781640628",
        "-" + "9" * 120 + "." + "9" * 40,
        "1E-90",
    ]
    return st.one_of(
        st.sampled_from([decimal.Decimal(x) for x in extremes]),
        st.decimals(allow_nan=False, allow_infinity=False),
    )


def datetimes(lo: dt.datetime = dt.datetime.min, hi: dt.datetime = dt.datetime.max):
    extremes = [
        d
        for d in (lo, hi, dt.datetime(1970, 1, 1), dt.datetime(2000, 2, 29, 23, 59, 59, 999999))
        if lo <= d <= hi
    ]
    return st.one_of(st.sampled_from(extremes), st.datetimes(lo, hi))


def aware_datetimes() -> st.SearchStrategy:
    zones = st.integers(-15 * 60 + 1, 15 * 60 - 1).map(
        lambda m: dt.timezone(dt.timedelta(minutes=m))
    )
    return st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30), timezones=zones)


def json_texts() -> st.SearchStrategy:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        texts(12),
    )
    values = st.recursive(
        leaves,
        lambda ch: st.lists(ch, max_size=3) | st.dictionaries(texts(6), ch, max_size=3),
        max_leaves=8,
    )
    seps = st.sampled_from([(",", ":"), (", ", ": "), (" , ", " :  ")])
    return st.builds(
        lambda v, ascii_, sep, pad: pad + json.dumps(v, ensure_ascii=ascii_, separators=sep) + pad,
        values,
        st.booleans(),
        seps,
        st.sampled_from(["", " ", "\n"]),
    )


def pg_intervals() -> st.SearchStrategy:
    def fmt(y, mo, d, neg, h, mi, s, us):
        return f"{y} years {mo} mons {d} days {'-' if neg else ''}{h:02d}:{mi:02d}:{s:02d}.{us:06d}"

    return st.builds(
        fmt,
        st.integers(-5000, 5000),
        st.integers(-11, 11),
        st.integers(-40000, 40000),
        st.booleans(),
        st.integers(0, 2000),
        st.integers(0, 59),
        st.integers(0, 59),
        st.integers(0, 999999),
    )


def pg_array(items: list, quote: bool) -> str:
    def one(x):
        if x is None:
            return "NULL"
        if not quote:
            return str(x)
        return '"' + str(x).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "{" + ",".join(one(x) for x in items) + "}"


def inets() -> st.SearchStrategy:
    v4 = st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(lambda t: f"{t[0]}/{t[1]}")
    v6 = st.tuples(st.ip_addresses(v=6), st.integers(0, 128)).map(lambda t: f"{t[0]}/{t[1]}")
    return st.one_of(st.ip_addresses().map(str), v4, v6)


def sqlite_any() -> st.SearchStrategy:
    """Any value SQLite stores: a column of any declared type may hold any of them."""
    return st.one_of(st.none(), ints("bigint"), floats(), texts(), binaries())


def sqlite_datetime_texts() -> st.SearchStrategy:
    fmts = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d", "%Y-%m-%d %H:%M:%S.%f+02:00"]
    return st.builds(
        lambda d, f: d.strftime(f), st.datetimes(dt.datetime(1000, 1, 1)), st.sampled_from(fmts)
    )


# ------------------------------------------------------------------------------------ types


@dataclass(frozen=True)
class ColType:
    ddl: str
    values: st.SearchStrategy = field(compare=False, repr=False)
    note: str = ""

    def __repr__(self) -> str:
        return f"{self.ddl} ({self.note})" if self.note else self.ddl


# PostgreSQL dates and timestamps beyond Python's (and Arrow's) range, as text
PG_DATES = st.sampled_from(
    ["infinity", "-infinity", "0044-03-15 BC", "4713-01-01 BC", "294276-12-31"]
)


def _pg_types() -> st.SearchStrategy:
    fixed = [
        ColType("smallint", ints("smallint")),
        ColType("integer", ints("int")),
        ColType("bigint", ints("bigint")),
        ColType("real", floats(32)),
        ColType("double precision", floats()),
        ColType("numeric", unbounded_decimals()),
        ColType("boolean", st.booleans()),
        ColType("text", texts()),
        ColType("bytea", binaries()),
        ColType(
            "date", st.one_of(st.sampled_from([dt.date.min, dt.date.max]), st.dates(), PG_DATES)
        ),
        ColType("time", st.one_of(st.times(), st.just("24:00:00"))),
        ColType("timestamp", st.one_of(datetimes(), PG_DATES)),
        ColType("timestamptz", st.one_of(aware_datetimes(), PG_DATES)),
        ColType("interval", pg_intervals()),
        ColType("uuid", st.uuids().map(str)),
        ColType("json", json_texts()),
        ColType("jsonb", json_texts()),
        ColType("inet", inets()),
        ColType(
            "integer[]",
            st.lists(st.none() | ints("int"), max_size=5).map(lambda x: pg_array(x, False)),
        ),
        ColType(
            "text[]",
            st.lists(st.none() | texts(10, nul=False), max_size=4).map(lambda x: pg_array(x, True)),
        ),
    ]
    numeric = st.sampled_from([1, 5, 18, 38, 39, 50, 76, 77, 120, 1000])
    sized = st.one_of(
        st.builds(
            lambda p, s: ColType(f"numeric({p},{min(s, p)})", decimals(p, min(s, p))),
            numeric,
            st.sampled_from([0, 2, 6, 10, 30, 38, 60]),
        ),
        st.integers(1, 300).map(lambda n: ColType(f"varchar({n})", texts(n))),
        st.integers(1, 40).map(lambda n: ColType(f"char({n})", texts(n))),
    )
    return st.one_of(st.sampled_from(fixed), sized)


def _mariadb_types() -> st.SearchStrategy:
    fixed = []
    for kind in ("tinyint", "smallint", "mediumint", "int", "bigint"):
        fixed.append(ColType(kind.upper(), ints(kind)))
        fixed.append(ColType(f"{kind.upper()} UNSIGNED", ints(kind, unsigned=True)))
    fixed += [
        ColType("FLOAT", floats(32)),
        ColType("DOUBLE", floats()),
        ColType("TEXT", texts()),
        ColType("BLOB", binaries()),
        ColType(
            "DATE",
            st.one_of(st.sampled_from([dt.date(1000, 1, 1), dt.date(9999, 12, 31)]), st.dates()),
        ),
        ColType("DATETIME(6)", datetimes()),
        ColType(
            "TIMESTAMP(6) NULL",
            datetimes(dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(2038, 1, 19, 3, 14, 7, 999999)),
        ),
        ColType(
            "TIME(6)",
            st.timedeltas(
                -dt.timedelta(hours=838, minutes=59, seconds=59),
                dt.timedelta(hours=838, minutes=59, seconds=59),
            ),
        ),
        ColType("YEAR", st.one_of(st.sampled_from([0, 1901, 2155]), st.integers(1901, 2155))),
        ColType(
            "ENUM('a','b','ü','\U0001f600','')",
            st.one_of(st.sampled_from(["a", "b", "ü", "\U0001f600", ""]), texts(3)),
        ),
        ColType(
            "SET('x','y','z')", st.sets(st.sampled_from("xyz")).map(lambda s: ",".join(sorted(s)))
        ),
        ColType("JSON", json_texts()),
    ]
    sized = st.one_of(
        st.builds(
            lambda p, s: ColType(f"DECIMAL({p},{min(s, p)})", decimals(p, min(s, p))),
            st.sampled_from([1, 10, 18, 19, 38, 39, 65]),
            st.sampled_from([0, 2, 6, 10, 30]),
        ),
        st.integers(1, 64).map(lambda n: ColType(f"BIT({n})", st.integers(0, 2**n - 1))),
        st.integers(1, 255).map(lambda n: ColType(f"CHAR({n})", texts(n))),
        st.integers(1, 500).map(lambda n: ColType(f"VARCHAR({n})", texts(n))),
        st.integers(1, 300).map(lambda n: ColType(f"VARBINARY({n})", binaries(n))),
    )
    return st.one_of(st.sampled_from(fixed), sized)


def _sqlite_types() -> st.SearchStrategy:
    numeric = st.one_of(
        ints("bigint"),
        floats(),
        unbounded_decimals().map(str),
        st.sampled_from(["12.50", "1e3", "0x10", "123456789012345678901234567890"]),
    )
    natural = [
        ("INTEGER", ints("bigint")),
        ("REAL", floats()),
        ("TEXT", texts()),
        ("BLOB", binaries()),
        ("NUMERIC", numeric),
        ("BOOLEAN", st.sampled_from([0, 1, True, False, 2, "true"])),
        ("DATETIME", sqlite_datetime_texts()),
    ]
    typed = st.sampled_from([ColType(ddl, values) for ddl, values in natural])
    # a column of any declared type may hold any value (SQLite's type affinity)
    mixed = st.sampled_from(
        [ColType(d, st.one_of(v, sqlite_any()), "any value") for d, v in natural]
    )
    untyped = st.just(ColType("", sqlite_any(), "no declared type"))
    return st.one_of(typed, typed, typed, typed, mixed, untyped)


COLUMN_TYPES = {"postgresql": _pg_types, "mariadb": _mariadb_types, "sqlite": _sqlite_types}


@dataclass(frozen=True)
class KeyType:
    name: str  # int | bigint | varchar | uuid
    ddl: str
    values: st.SearchStrategy = field(compare=False, repr=False)
    unique_by: object = field(compare=False, repr=False, default=None)

    def __repr__(self) -> str:
        return self.ddl


def key_types(dialect: str) -> list[KeyType]:
    key_text = st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=20,
    )
    # MariaDB compares VARCHAR keys PAD SPACE ('a' = 'a '): keys differing only so collide
    norm = (lambda s: s.rstrip(" ")) if dialect == "mariadb" else None
    ddl = {
        "postgresql": ("integer", "bigint", "varchar(40)", "uuid"),
        "mariadb": ("INT", "BIGINT", "VARCHAR(40)", "UUID"),
        "sqlite": ("INTEGER", "BIGINT", "VARCHAR(40)", "CHAR(36)"),
    }[dialect]
    return [
        KeyType("int", ddl[0], ints("int")),
        KeyType("bigint", ddl[1], ints("bigint")),
        KeyType("varchar", ddl[2], key_text, norm),
        KeyType("uuid", ddl[3], st.uuids().map(str)),
    ]


# ------------------------------------------------------------------------------------ schemas


@dataclass
class Table:
    name: str
    key: list[tuple[str, str]]  # primary-key columns (name, ddl)
    parent: str | None  # None for the root
    ref: tuple[str, str] | None  # (column, ddl) referring to the parent's key
    extras: list[tuple[str, ColType]]
    rows: list[dict] = field(default_factory=list)  # column -> value, "tag" included
    trigger: bool = False

    @property
    def pk(self) -> list[str]:
        return [c for c, _ in self.key]

    @property
    def columns(self) -> list[str]:
        cols = self.pk + ([self.ref[0]] if self.ref else []) + ["tag"]
        cols += [c for c, _ in self.extras]
        return cols


@dataclass
class Case:
    dialect: str
    tables: list[Table]  # parents first; tables[0] is the root
    unrelated: Table
    session: object  # the root key of the session backed up (tag 0)
    other: object  # the root key of the session left alone (tag 1)

    def __repr__(self) -> str:
        lines = [f"Case({self.dialect}, session={self.session!r}, other={self.other!r})"]
        for t in [*self.tables, self.unrelated]:
            cols = ", ".join(f"{c} {d}" for c, d in t.key)
            if t.ref:
                cols += f", {t.ref[0]} {t.ref[1]} -> {t.parent}"
            cols += "".join(f", {c} {ct!r}" for c, ct in t.extras)
            lines.append(f"  {t.name}({cols}){' +trigger' if t.trigger else ''}")
            for r in t.rows:
                lines.append(f"    {r!r}")
        return "\n".join(lines)


ROOT, UNRELATED = "p_root", "p_unrelated"


def _key_columns(draw, dialect: str, keys: list[KeyType], composite: bool) -> tuple[list, object]:
    """(pk columns, strategy of one key value as a tuple)."""
    if composite and draw(st.booleans()):
        int_ddl = keys[0].ddl
        text_ddl = {"postgresql": "varchar(20)", "mariadb": "VARCHAR(20)", "sqlite": "VARCHAR(20)"}[
            dialect
        ]
        text_key = st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
        )
        return [("ka", int_ddl), ("kb", text_ddl)], st.tuples(ints("int"), text_key)
    kt = draw(st.sampled_from(keys))
    return [("id", kt.ddl)], st.tuples(kt.values)


def _unique_keys(draw, values: st.SearchStrategy, n: int, dialect: str) -> list[tuple]:
    def norm(k: tuple) -> tuple:
        return tuple(
            (x.rstrip(" ") if dialect == "mariadb" else x) if isinstance(x, str) else x for x in k
        )

    return draw(st.lists(values, min_size=n, max_size=n, unique_by=norm))


def _extras(draw, dialect: str) -> list[tuple[str, ColType]]:
    n = draw(st.integers(0, 5))
    return [(f"c{i}", draw(COLUMN_TYPES[dialect]())) for i in range(n)]


def _fill(draw, table: Table, keys: list[tuple], parents: list[tuple[int, tuple]]) -> None:
    """Rows of `table`: one per key, each under (tag, parent key) of `parents` in turn."""
    for key, (tag, parent_key) in zip(keys, parents, strict=True):
        row = dict(zip(table.pk, key, strict=True))
        if table.ref is not None:
            row[table.ref[0]] = parent_key[0]
        row["tag"] = tag
        for col, ctype in table.extras:
            row[col] = draw(st.none() | ctype.values)
        table.rows.append(row)


@st.composite
def cases(draw, dialect: str) -> Case:
    keys = key_types(dialect)
    root_key = draw(st.sampled_from(keys))
    root = Table(ROOT, [("id", root_key.ddl)], None, None, _extras(draw, dialect))
    a, b = _unique_keys(draw, st.tuples(root_key.values), 2, dialect)
    _fill(draw, root, [a, b], [(0, a), (1, b)])
    tables = [root]
    children = []
    for i in range(draw(st.integers(0, 2))):
        pk, values = _key_columns(draw, dialect, keys, composite=True)
        child = Table(f"p_child{i}", pk, ROOT, ("rid", root_key.ddl), _extras(draw, dialect))
        per = [draw(st.integers(0, 3)), draw(st.integers(0, 3))]
        owners = [(0, a)] * per[0] + [(1, b)] * per[1]
        _fill(draw, child, _unique_keys(draw, values, len(owners), dialect), owners)
        tables.append(child)
        children.append(child)
    single = [c for c in children if len(c.key) == 1]
    for i in range(draw(st.integers(0, 2)) if single else 0):
        parent = draw(st.sampled_from(single))
        pk, values = _key_columns(draw, dialect, keys, composite=True)
        grand = Table(
            f"p_grand{i}", pk, parent.name, ("cid", parent.key[0][1]), _extras(draw, dialect)
        )
        owners = []
        for row in parent.rows:
            owners += [(row["tag"], (row["id"],))] * draw(st.integers(0, 2))
        _fill(draw, grand, _unique_keys(draw, values, len(owners), dialect), owners)
        tables.append(grand)
    if dialect != "sqlite" and draw(st.sampled_from([False] * 5 + [True])):
        draw(st.sampled_from(tables)).trigger = True
    int_ddl = keys[0].ddl
    unrelated = Table(UNRELATED, [("id", int_ddl)], None, None, _extras(draw, dialect))
    _fill(draw, unrelated, [(1,), (2,)], [(1, (None,)), (1, (None,))])
    return Case(dialect, tables, unrelated, a[0], b[0])
