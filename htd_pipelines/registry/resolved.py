"""A registry type resolved against the live schema: tables, keys, order, row selection."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from htd_pipelines.registry.arrow_types import (
    ColumnSpec,
    TypeRefused,
    column_spec,
    select_expression,
    table_schema,
)
from htd_pipelines.registry.spec import BackupType, RegistryError, TableRule

REL_COLUMN = "__htd_relation_id"


@dataclass(frozen=True)
class TablePlan:
    rule: TableRule
    table: sa.Table
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    parent: TablePlan | None  # None for the root
    parent_key: str | None  # column of the parent that this table's key holds

    @property
    def name(self) -> str:
        return self.rule.table

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    def arrow_schema(self) -> pa.Schema:
        cached = self.__dict__.get("_arrow_schema")
        if cached is None:
            cached = table_schema(list(self.columns))
            object.__setattr__(self, "_arrow_schema", cached)  # frozen: computed once
        return cached

    def chain(self) -> list[TablePlan]:
        """This table and its ancestors up to (not including) the root."""
        out, node = [], self
        while node.parent is not None:
            out.append(node)
            node = node.parent
        return out

    def _ids_param(self) -> sa.BindParameter:
        return sa.bindparam("ids", expanding=True)

    def values(self) -> list[sa.ColumnElement]:
        """Every column as the expression that reads it as its snapshot value."""
        return [select_expression(self.table.c[c.name], c) for c in self.columns]

    def delete_returning(self) -> sa.Delete:
        """DELETE this table's rows of the sessions in `:ids`, RETURNING their snapshot values."""
        return sa.delete(self.table).where(self.where_owned()).returning(*self.values())

    def select_rows(self) -> sa.Select:
        """This table's rows of the sessions in `:ids`, plus the session id as REL_COLUMN."""
        cols = self.values()
        if self.parent is None:
            rel = self.table.c[self.rule.key]
            return sa.select(*cols, rel.label(REL_COLUMN)).where(rel.in_(self._ids_param()))
        chain = self.chain()
        from_clause: sa.FromClause = self.table
        for child, parent in zip(chain, chain[1:], strict=False):
            from_clause = from_clause.join(
                parent.table, child.table.c[child.rule.key] == parent.table.c[child.parent_key]
            )
        top = chain[-1]  # its key holds the root key
        rel = top.table.c[top.rule.key]
        return (
            sa.select(*cols, rel.label(REL_COLUMN))
            .select_from(from_clause)
            .where(rel.in_(self._ids_param()))
        )

    def where_owned(self) -> sa.ColumnElement[bool]:
        """Predicate on this table alone: rows owned by the sessions in `:ids` (for DELETE)."""
        key = self.table.c[self.rule.key]
        if self.parent is None or self.parent.parent is None:
            return key.in_(self._ids_param())
        parent_keys = sa.select(self.parent.table.c[self.parent_key]).where(
            self.parent.where_owned()
        )
        return key.in_(parent_keys.scalar_subquery())


@dataclass(frozen=True)
class ResolvedType:
    btype: BackupType
    tables: tuple[TablePlan, ...]  # parents first: insert order; reversed: delete order

    @property
    def root(self) -> TablePlan:
        return next(t for t in self.tables if t.parent is None)

    def table(self, name: str) -> TablePlan:
        return next(t for t in self.tables if t.name == name)

    def describe(self) -> list[dict]:
        return [
            {
                "table": t.name,
                "key": t.rule.key,
                "parent": t.parent.name if t.parent else None,
                "parent_key": t.parent_key,
                "primary_key": list(t.primary_key),
                "files": list(t.rule.files),
                "columns": len(t.columns),
            }
            for t in self.tables
        ]


def _reflect(engine: Engine, btype: BackupType, where: str) -> dict[str, sa.Table]:
    inspector = sa.inspect(engine)
    metadata = sa.MetaData()
    tables: dict[str, sa.Table] = {}
    for rule in btype.all_tables:
        if not inspector.has_table(rule.name, schema=rule.schema):
            raise RegistryError(f"{where}: table {rule.table!r} does not exist in the database")
        with warnings.catch_warnings():
            # a type SQLAlchemy does not know reflects as NullType: column_spec refuses it,
            # naming table, column and type, which says more than the warning
            warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
            tables[rule.table] = sa.Table(
                rule.name, metadata, schema=rule.schema, autoload_with=engine, resolve_fks=False
            )
    return tables


def _check_column(table: sa.Table, column: str, where: str, role: str) -> None:
    if column not in table.c:
        raise RegistryError(f"{where}: table {table.fullname!r} has no column {column!r} ({role})")


def _unique_alone(plan: TablePlan, column: str) -> bool:
    """Does `column` alone identify a row of the table: its whole primary key (as reflected or
    declared), or a unique constraint or a unique, non-partial index on it alone?"""
    if tuple(plan.primary_key) == (column,):
        return True
    table = plan.table
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and [c.name for c in constraint.columns] == [
            column
        ]:
            return True
    for index in table.indexes:
        partial = any(
            k.endswith("_where") and v is not None for k, v in index.dialect_kwargs.items()
        )
        if (
            index.unique
            and not partial
            and len(index.expressions) == 1
            and [c.name for c in index.columns] == [column]
        ):
            return True
    return False


_PARTITION_FKS = """
WITH RECURSIVE tree(root, rel) AS (
    SELECT c.oid, c.oid FROM pg_class c WHERE c.relkind = 'p' AND NOT c.relispartition
    UNION ALL
    SELECT tree.root, i.inhrelid FROM tree JOIN pg_inherits i ON i.inhparent = tree.rel
)
SELECT sn.nspname, s.relname, tn.nspname, t.relname
FROM pg_constraint k
LEFT JOIN tree st ON st.rel = k.conrelid
LEFT JOIN tree tt ON tt.rel = k.confrelid
JOIN pg_class s ON s.oid = COALESCE(st.root, k.conrelid)
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_class t ON t.oid = COALESCE(tt.root, k.confrelid)
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE k.contype = 'f' AND (k.conrelid <> s.oid OR k.confrelid <> t.oid)
"""


def _partition_fks(engine: Engine, plans: dict[str, TablePlan]) -> dict[str, set[str]]:
    """PostgreSQL declarative partitioning: foreign keys declared on partitions (not on the
    partitioned table, so not reflected with it), or pointing at a partition, as edges between
    the partitioned tables of the registry (pg_inherits, walked from each partitioned root):
    table -> tables that must precede it."""
    if engine.dialect.name != "postgresql":
        return {}
    with engine.connect() as conn:
        default = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        rows = conn.exec_driver_sql(_PARTITION_FKS).all()
    by_name = {(p.table.schema or default, p.table.name): n for n, p in plans.items()}
    edges: dict[str, set[str]] = {}
    for src_schema, src, dst_schema, dst in rows:
        child, parent = by_name.get((src_schema, src)), by_name.get((dst_schema, dst))
        if child is not None and parent is not None and child != parent:
            edges.setdefault(child, set()).add(parent)
    return edges


def _order(
    btype: BackupType,
    plans: dict[str, TablePlan],
    where: str,
    extra: dict[str, set[str]] | None = None,
) -> list[TablePlan]:
    """Parents before children: declared parents plus the database's foreign keys (`extra`:
    more edges, such as the foreign keys of partitions)."""
    names = [r.table for r in btype.all_tables]
    by_fullname = {plans[n].table.fullname: n for n in names}
    after: dict[str, set[str]] = {n: set() for n in names}  # table -> tables that must precede
    for n in names:
        plan = plans[n]
        after[n] |= (extra or {}).get(n, set())
        if plan.parent is not None:
            after[n].add(plan.parent.name)
        for fk in plan.table.foreign_keys:
            target = fk.target_fullname.rsplit(".", 1)[0]
            if target in by_fullname and by_fullname[target] != n:
                after[n].add(by_fullname[target])
    ordered: list[str] = []
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if after[n] <= set(ordered)]
        if not ready:
            raise RegistryError(
                f"{where}: foreign keys and parents form a cycle among tables "
                + ", ".join(repr(n) for n in remaining)
            )
        ordered.append(ready[0])
        remaining.remove(ready[0])
    return [plans[n] for n in ordered]


def _parent_key(btype: BackupType, rule: TableRule, parent_plan: TablePlan, where: str) -> str:
    """The column of the parent that the table's key holds, checked."""
    if rule.parent_key:
        parent_key = rule.parent_key
    elif parent_plan.parent is None:
        parent_key = btype.root.key
    elif len(parent_plan.primary_key) == 1:
        parent_key = parent_plan.primary_key[0]
    else:
        raise RegistryError(
            f"{where}: table {rule.table!r}: parent {parent_plan.name!r} has a composite "
            "primary key; declare parent_key: <column>"
        )
    _check_column(parent_plan.table, parent_key, where, f"parent_key of {rule.table}")
    # below the root, a table's rows are selected by joining its parent on parent_key: a
    # column that does not identify one parent row repeats them
    if parent_plan.parent is not None and not _unique_alone(parent_plan, parent_key):
        raise RegistryError(
            f"{where}: table {rule.table!r}: parent_key {parent_key!r} is not unique in parent "
            f"{parent_plan.name!r} (not its whole primary key, no unique constraint or index on "
            "it alone): the select would repeat rows; key the table to a unique column of the "
            "parent"
        )
    _check_key_matches_foreign_key(rule, parent_plan, parent_key, where)
    return parent_key


def _check_key_matches_foreign_key(
    rule: TableRule, parent_plan: TablePlan, parent_key: str, where: str
) -> None:
    """When the database has a foreign key on the table's key column, it must point at the
    declared parent's parent_key: a registry that keys a table to another parent selects
    (and deletes) rows of other sessions."""
    table = parent_plan.table.metadata.tables.get(
        f"{rule.schema}.{rule.name}" if rule.schema else rule.name
    )
    if table is None or rule.key not in table.c:
        return
    targets = [
        fk.target_fullname
        for fk in table.foreign_keys
        if fk.parent.name == rule.key and len(fk.constraint.column_keys) == 1
    ]
    expected = f"{parent_plan.table.fullname}.{parent_key}"
    if targets and expected not in targets:
        raise RegistryError(
            f"{where}: table {rule.table!r}: its key {rule.key!r} has a foreign key to "
            f"{', '.join(targets)}, not to the declared parent {parent_plan.name}.{parent_key}: "
            "the session's rows would be selected through the wrong parent; fix parent or "
            "parent_key"
        )


def resolve_type(engine: Engine, btype: BackupType, source: str = "registry") -> ResolvedType:
    """Validate a type against the live schema; errors name the file, type, table and column."""
    where = f"{source}: type {btype.name}"
    tables = _reflect(engine, btype, where)
    plans: dict[str, TablePlan] = {}
    for role, column in btype.lifecycle.columns().items():
        _check_column(tables[btype.root.table], column, where, f"lifecycle {role}")
    for rule in btype.all_tables:  # declared parents precede their children
        table = tables[rule.table]
        _check_column(table, rule.key, where, "key")
        for col in rule.files:
            _check_column(table, col, where, "files")
        if rule.primary_key:
            for col in rule.primary_key:
                _check_column(table, col, where, "primary_key")
            pk = rule.primary_key
        else:
            pk = tuple(c.name for c in table.primary_key.columns)
            if not pk:
                raise RegistryError(
                    f"{where}: table {rule.table!r} has no primary key; "
                    "declare one with primary_key: [column, ...]"
                )
        parent_plan = None if rule is btype.root else plans[rule.parent or btype.root.table]
        parent_key = None if parent_plan is None else _parent_key(btype, rule, parent_plan, where)
        try:
            specs = tuple(column_spec(c, engine.dialect) for c in table.columns)
        except TypeRefused as exc:  # before anything is read, written or deleted
            raise RegistryError(f"{where}: table {rule.table!r}, {exc}") from None
        plans[rule.table] = TablePlan(rule, table, specs, pk, parent_plan, parent_key)
    _refuse_outside_cascades(engine, plans, where)
    return ResolvedType(btype, tuple(_order(btype, plans, where, _partition_fks(engine, plans))))


_REFERENCING_SQL = {
    # (referencing table, constraint, ON DELETE rule) of foreign keys onto table :t whose delete
    # rule changes the referencing rows (CASCADE deletes them, SET NULL/DEFAULT rewrites them)
    "postgresql": "SELECT c.conrelid::regclass::text, c.conname, CASE c.confdeltype"
    " WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END"
    " FROM pg_constraint c WHERE c.contype = 'f' AND c.confrelid = CAST(:t AS regclass)"
    " AND c.confdeltype IN ('c', 'n', 'd')",
    "mysql": "SELECT TABLE_NAME, CONSTRAINT_NAME, DELETE_RULE"
    " FROM information_schema.REFERENTIAL_CONSTRAINTS"
    " WHERE CONSTRAINT_SCHEMA = COALESCE(:s, DATABASE()) AND REFERENCED_TABLE_NAME = :n"
    " AND DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT')",
    "sqlite": "SELECT m.name, 'fk ' || f.id, upper(f.on_delete) FROM sqlite_master m,"
    " pragma_foreign_key_list(m.name) f WHERE m.type = 'table' AND f.\"table\" = :n"
    " AND upper(f.on_delete) IN ('CASCADE', 'SET NULL', 'SET DEFAULT')",
}


def _refuse_outside_cascades(engine: Engine, plans: dict[str, TablePlan], where: str) -> None:
    """A table outside the type whose foreign key deletes or rewrites its rows when a row of
    the type is deleted (ON DELETE CASCADE / SET NULL / SET DEFAULT) would lose rows no backup
    holds: refused when the type is resolved, naming both tables and the constraint."""
    dialect = "mysql" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name
    sql = _REFERENCING_SQL.get(dialect)
    if sql is None:
        return
    prep = engine.dialect.identifier_preparer
    inside = {p.table.name for p in plans.values()} | {
        prep.format_table(p.table) for p in plans.values()
    }
    with engine.connect() as conn:
        for plan in plans.values():
            params = {"t": prep.format_table(plan.table), "n": plan.table.name}
            params["s"] = plan.table.schema
            for referencing, constraint, rule in conn.execute(sa.text(sql), params):
                if referencing in inside or referencing.split(".")[-1].strip('"') in inside:
                    continue
                raise RegistryError(
                    f"{where}: table {referencing!r}, not in the type, references "
                    f"{plan.name!r} with ON DELETE {rule} ({constraint}): deleting a session "
                    "would change rows no backup holds; add the table to the type or change "
                    "the constraint"
                )


_CACHE: dict[tuple, ResolvedType] = {}
_CACHE_LOCK = threading.Lock()


def resolve_cached(engine: Engine, btype: BackupType, source: str, scope: str) -> ResolvedType:
    """resolve_type once per scope (a run id): the ops of one run share one reflection."""
    key = (str(engine.url), btype.digest(), scope)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is None:
        hit = resolve_type(engine, btype, source)
        with _CACHE_LOCK:
            if len(_CACHE) > 64:
                _CACHE.clear()
            _CACHE[key] = hit
    return hit
