"""The relation registry: a YAML declaration of what a session owns, parsed without a database.

Loading checks the file's structure (identifiers, duplicates, parents, cycles) and puts every
declared parent before its children, whatever the file's order; checks against the live schema
happen in `registry.resolved`, so that the code location loads while the application database
is down.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TABLE_RULE_KEYS = {"table", "key", "parent", "parent_key", "files", "primary_key"}


class RegistryError(ValueError):
    """The registry is wrong; the message names the file, type, table or column at fault."""


@dataclass(frozen=True)
class TableRule:
    """One table a session owns: rows whose `key` holds the parent's key (the root's by default)."""

    table: str
    key: str
    parent: str | None = None  # None: the key holds the root key
    parent_key: str | None = None  # column of the parent the key refers to (default: its PK)
    files: tuple[str, ...] = ()
    primary_key: tuple[str, ...] | None = None  # override for tables without a primary key

    @property
    def schema(self) -> str | None:
        return self.table.split(".", 1)[0] if "." in self.table else None

    @property
    def name(self) -> str:
        return self.table.split(".", 1)[-1]

    @property
    def slug(self) -> str:
        """The table as a plain name usable in op names and file names."""
        return self.table.replace(".", "__")


LIFECYCLE_KEYS = ("delete_marker", "delete_marker_by", "test_flag", "created_at")


@dataclass(frozen=True)
class Lifecycle:
    """Optional columns of the root table that drive the automation (all plain names).

    delete_marker: non-NULL when the application asks for the session to be deleted (a
    timestamp); delete_marker_by: who asked; test_flag: true for test sessions; created_at:
    the session's creation time (test-session cleanup age).
    """

    delete_marker: str | None = None
    delete_marker_by: str | None = None
    test_flag: str | None = None
    created_at: str | None = None

    def columns(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class Retention:
    """Which versions of a relation id's backups to keep (no field set: keep everything)."""

    keep_last: int | None = None  # the newest N versions
    keep_days: float | None = None  # versions newer than D days
    allow_unrestored: bool = False  # may prune backups never restored (is_reback = 0)

    @property
    def active(self) -> bool:
        return self.keep_last is not None or self.keep_days is not None


@dataclass(frozen=True)
class BackupType:
    name: str
    root: TableRule
    tables: tuple[TableRule, ...]
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    retention: Retention = field(default_factory=Retention)

    @property
    def all_tables(self) -> tuple[TableRule, ...]:
        return (self.root, *self.tables)

    def rule(self, table: str) -> TableRule | None:
        return next((r for r in self.all_tables if r.table == table), None)

    def digest(self) -> str:
        """sha256 of the type's declaration, recorded in every manifest."""
        doc = [r.__dict__ for r in self.all_tables]
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Registry:
    path: str
    types: dict[str, BackupType] = field(default_factory=dict)

    def get(self, type_name: str) -> BackupType:
        try:
            return self.types[type_name]
        except KeyError:
            known = ", ".join(sorted(self.types)) or "none"
            raise RegistryError(
                f"{self.path}: unknown backup type {type_name!r} (known types: {known})"
            ) from None

    def table_names(self) -> list[str]:
        """Every table of every type, each once, in the registry's order (parents first)."""
        seen: dict[str, None] = {}
        for btype in self.types.values():
            for rule in btype.all_tables:
                seen.setdefault(rule.table, None)
        return list(seen)


def check_identifier(value: Any, where: str, *, qualified: bool = False) -> str:
    if not isinstance(value, str):
        raise RegistryError(f"{where}: expected a name, got {value!r}")
    parts = value.split(".")
    if len(parts) > (2 if qualified else 1) or not all(IDENTIFIER.match(p) for p in parts):
        kind = "an optionally schema-qualified name" if qualified else "a plain name"
        raise RegistryError(f"{where}: {value!r} is not {kind} (letters, digits and _ only)")
    return value


def _parse_rule(raw: Any, where: str, *, root: bool) -> TableRule:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected a mapping like {{table: ..., key: ...}}")
    unknown = set(raw) - TABLE_RULE_KEYS
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for required in ("table", "key"):
        if required not in raw:
            raise RegistryError(f"{where}: missing {required!r}")
    table = check_identifier(raw["table"], f"{where}: table", qualified=True)
    where = f"{where} (table {table})"
    if root and ("parent" in raw or "parent_key" in raw):
        raise RegistryError(f"{where}: the root table cannot have a parent")
    files = raw.get("files") or []
    if not isinstance(files, list):
        raise RegistryError(f"{where}: files must be a list of column names")
    pk = raw.get("primary_key")
    if pk is not None:
        pk = [pk] if isinstance(pk, str) else pk
        if not isinstance(pk, list) or not pk:
            raise RegistryError(f"{where}: primary_key must be a column or a list of columns")
    parent = raw.get("parent")
    return TableRule(
        table=table,
        key=check_identifier(raw["key"], f"{where}: key"),
        parent=check_identifier(parent, f"{where}: parent", qualified=True) if parent else None,
        parent_key=(
            check_identifier(raw["parent_key"], f"{where}: parent_key")
            if raw.get("parent_key")
            else None
        ),
        files=tuple(check_identifier(c, f"{where}: files") for c in files),
        primary_key=(
            tuple(check_identifier(c, f"{where}: primary_key") for c in pk) if pk else None
        ),
    )


def _parse_type(name: str, raw: Any, where: str) -> BackupType:
    if not isinstance(raw, dict) or "root" not in raw:
        raise RegistryError(f"{where}: expected a mapping with 'root' and 'tables'")
    unknown = set(raw) - {"root", "tables", "lifecycle", "retention"}
    if unknown:
        raise RegistryError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    root = _parse_rule(raw["root"], f"{where}: root", root=True)
    life_raw = raw.get("lifecycle") or {}
    if not isinstance(life_raw, dict) or set(life_raw) - set(LIFECYCLE_KEYS):
        raise RegistryError(
            f"{where}: lifecycle must be a mapping with keys among {', '.join(LIFECYCLE_KEYS)}"
        )
    lifecycle = Lifecycle(
        **{k: check_identifier(v, f"{where}: lifecycle: {k}") for k, v in life_raw.items()}
    )
    tables_raw = raw.get("tables") or []
    if not isinstance(tables_raw, list):
        raise RegistryError(f"{where}: tables must be a list")
    tables = [_parse_rule(t, f"{where}: tables[{i}]", root=False) for i, t in enumerate(tables_raw)]
    _check_table_tree(tables, root.table, where)
    return BackupType(
        name=name,
        root=root,
        tables=_parents_first(tables, root.table),
        lifecycle=lifecycle,
        retention=_parse_retention(raw.get("retention"), f"{where}: retention"),
    )


def _check_table_tree(tables: list[TableRule], root_table: str, where: str) -> None:
    """Each table listed once, every declared parent known, and the parents a tree under
    the root."""
    seen = {root_table}
    for rule in tables:
        if rule.table in seen:
            raise RegistryError(f"{where}: table {rule.table!r} is listed twice")
        seen.add(rule.table)
    for rule in tables:
        if rule.parent is not None and rule.parent not in seen:
            raise RegistryError(
                f"{where}: table {rule.table!r} names unknown parent {rule.parent!r}"
            )
        if rule.parent == rule.table:
            raise RegistryError(f"{where}: table {rule.table!r} is its own parent")
    # Declared parents must form a tree under the root (no cycles).
    parents = {r.table: (r.parent or root_table) for r in tables}
    for rule in tables:
        chain, node = [rule.table], parents[rule.table]
        while node != root_table:
            if node in chain:
                cycle = " -> ".join([*chain[chain.index(node) :], node])
                raise RegistryError(f"{where}: parent cycle {cycle}")
            chain.append(node)
            node = parents[node]


def _parents_first(tables: list[TableRule], root: str) -> tuple[TableRule, ...]:
    """The tables with every declared parent before its children, otherwise in declaration
    order (a file may list a child first). Parents are known and acyclic here; the database's
    foreign keys are added to this order when the type is resolved (plan.resolve_type)."""
    placed = {root}
    ordered: list[TableRule] = []
    remaining = list(tables)
    while remaining:
        ready = next(r for r in remaining if (r.parent or root) in placed)
        ordered.append(ready)
        placed.add(ready.table)
        remaining.remove(ready)
    return tuple(ordered)


def _parse_retention(raw: Any, where: str) -> Retention:
    if raw is None:
        return Retention()
    if not isinstance(raw, dict) or set(raw) - {"keep_last", "keep_days", "allow_unrestored"}:
        raise RegistryError(
            f"{where}: expected a mapping with keep_last, keep_days and/or allow_unrestored"
        )
    keep_last, keep_days = raw.get("keep_last"), raw.get("keep_days")
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise RegistryError(f"{where}: keep_last must be a whole number >= 1, got {keep_last!r}")
    if keep_days is not None and (
        not isinstance(keep_days, int | float) or isinstance(keep_days, bool) or keep_days <= 0
    ):
        raise RegistryError(f"{where}: keep_days must be a number > 0, got {keep_days!r}")
    allow = raw.get("allow_unrestored", False)
    if not isinstance(allow, bool):
        raise RegistryError(f"{where}: allow_unrestored must be true or false")
    return Retention(keep_last, float(keep_days) if keep_days is not None else None, allow)


def parse_registry(text: str, path: str = "<string>") -> Registry:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())  # one line: PyYAML points at the spot over lines
        raise RegistryError(f"{path}: not valid YAML: {reason}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("types"), dict) or not doc["types"]:
        raise RegistryError(f"{path}: expected a top-level 'types:' mapping with at least one type")
    types: dict[str, BackupType] = {}
    for name, raw in doc["types"].items():
        check_identifier(str(name), f"{path}: type name")
        types[str(name)] = _parse_type(str(name), raw, f"{path}: type {name}")
    return Registry(path=path, types=types)


def load_registry(path: str | Path) -> Registry:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{p}: cannot read the relation registry: {exc.strerror}") from exc
    return parse_registry(text, str(p))


_LOADED: dict[str, tuple[float, int, Registry]] = {}


def cached_registry(path: str | Path) -> Registry:
    """load_registry, parsed again only when the file changes (ops share one parse)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return load_registry(p)  # raises the error naming the file
    hit = _LOADED.get(str(p))
    if hit and hit[0] == st.st_mtime and hit[1] == st.st_size:
        return hit[2]
    registry = load_registry(p)
    _LOADED[str(p)] = (st.st_mtime, st.st_size, registry)
    return registry
