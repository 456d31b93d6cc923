"""Unit tests of the relation registry model (htd_pipelines.registry.spec): YAML in tmp_path,
no database, no Dagster."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from htd_pipelines.registry.spec import (
    BackupType,
    Registry,
    RegistryError,
    TableRule,
    load_registry,
)

# root -> sessions_a -> sessions_a_items, root -> notes; listed child first on purpose
CHILD_FIRST = """
    types:
      inst:
        root: {table: app.sessions, key: id}
        lifecycle: {delete_marker: deleted_at, test_flag: is_test}
        retention: {keep_last: 3}
        tables:
          - {table: items, key: a_id, parent: part_a, parent_key: id, files: [file_url]}
          - {table: part_a, key: session_id}
          - {table: notes, key: session_id, primary_key: [session_id, n]}
      dataset:
        root: {table: datasets, key: id}
"""


def write(tmp_path: Path, body: str, name: str = "relations.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def load_error(tmp_path: Path, body: str) -> str:
    path = write(tmp_path, body)
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # names the file
    return message


# -- valid registries -----------------------------------------------------------------------------


def test_valid_registry_parses_types_rules_and_options(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, CHILD_FIRST))
    assert isinstance(registry, Registry)
    assert list(registry.types) == ["inst", "dataset"]

    inst = registry.get("inst")
    assert isinstance(inst, BackupType)
    assert inst.root == TableRule(table="app.sessions", key="id")
    assert inst.root.schema == "app"
    assert inst.root.name == "sessions"
    assert inst.root.slug == "app__sessions"

    items = inst.rule("items")
    assert items is not None
    assert items.parent == "part_a"
    assert items.parent_key == "id"
    assert items.files == ("file_url",)
    assert items.schema is None

    notes = inst.rule("notes")
    assert notes is not None
    assert notes.parent is None  # keyed by the root
    assert notes.primary_key == ("session_id", "n")

    assert inst.rule("no_such_table") is None
    assert inst.lifecycle.columns() == {"delete_marker": "deleted_at", "test_flag": "is_test"}
    assert inst.retention.keep_last == 3
    assert inst.retention.active

    dataset = registry.get("dataset")
    assert dataset.tables == ()
    assert not dataset.retention.active


def test_tables_are_ordered_parents_first_when_a_child_is_listed_first(tmp_path: Path) -> None:
    inst = load_registry(write(tmp_path, CHILD_FIRST)).get("inst")
    order = [r.table for r in inst.all_tables]
    assert order[0] == "app.sessions"
    assert sorted(order) == sorted(["app.sessions", "items", "part_a", "notes"])
    assert order.index("part_a") < order.index("items")
    for rule in inst.tables:  # every declared parent comes before its child
        if rule.parent is not None:
            assert order.index(rule.parent) < order.index(rule.table)


def test_deep_chain_listed_in_reverse_comes_out_parents_first(tmp_path: Path) -> None:
    body = """
        types:
          inst:
            root: {table: s, key: id}
            tables:
              - {table: d, key: c_id, parent: c}
              - {table: c, key: b_id, parent: b}
              - {table: b, key: a_id, parent: a}
              - {table: a, key: s_id}
    """
    inst = load_registry(write(tmp_path, body)).get("inst")
    assert [r.table for r in inst.all_tables] == ["s", "a", "b", "c", "d"]


def test_table_names_lists_each_table_once_across_types(tmp_path: Path) -> None:
    body = """
        types:
          one:
            root: {table: s, key: id}
            tables: [{table: shared, key: s_id}, {table: only_one, key: s_id}]
          two:
            root: {table: s, key: id}
            tables: [{table: shared, key: s_id}, {table: only_two, key: s_id}]
    """
    registry = load_registry(write(tmp_path, body))
    assert registry.table_names() == ["s", "shared", "only_one", "only_two"]


def test_unknown_type_names_the_known_ones(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, CHILD_FIRST))
    with pytest.raises(RegistryError, match=r"unknown backup type 'nope'.*dataset, inst"):
        registry.get("nope")


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: child, key: p_id, parent: nowhere}
            """,
            ["type inst", "'child'", "unknown parent 'nowhere'"],
            id="unknown-parent",
        ),
        pytest.param(
            """
            types:
              inst:
                tables:
                  - {table: child, key: s_id}
            """,
            ["type inst", "'root'"],
            id="missing-root",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: child, key: s_id, colour: blue}
            """,
            ["type inst", "tables[0]", "unknown field(s) colour"],
            id="bad-key-in-table",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                owner: me
            """,
            ["type inst", "unknown field(s) owner"],
            id="bad-key-in-type",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: child, key: s_id}
                  - {table: other, key: s_id}
                  - {table: child, key: s_id}
            """,
            ["type inst", "'child' is listed twice"],
            id="duplicate-table",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: s, key: id}
            """,
            ["type inst", "'s' is listed twice"],
            id="root-listed-again",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: b, key: c_id, parent: c}
                  - {table: c, key: b_id, parent: b}
            """,
            ["type inst", "parent cycle", "b", "c"],
            id="parent-cycle",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id, parent: x}
            """,
            ["type inst", "table s", "root table cannot have a parent"],
            id="root-with-parent",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: child}
            """,
            ["type inst", "tables[0]", "missing 'key'"],
            id="missing-key",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: "child; drop table s", key: s_id}
            """,
            ["type inst", "'child; drop table s' is not"],
            id="bad-identifier",
        ),
        pytest.param(
            """
            types:
              inst:
                root: {table: s, key: id}
                retention: {keep_last: 0}
            """,
            ["type inst", "retention", "keep_last"],
            id="bad-retention",
        ),
        pytest.param("types: {}", ["top-level 'types:'"], id="no-types"),
    ],
)
def test_structural_errors_are_one_line_naming_what_is_at_fault(
    tmp_path: Path, body: str, fragments: list[str]
) -> None:
    message = load_error(tmp_path, body)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_yaml_raises_registry_error_naming_file_and_line(tmp_path: Path) -> None:
    body = "types:\n  inst:\n    root: {table: s, key: id\n"
    message = load_error(tmp_path, body)
    first = message.splitlines()[0]
    assert "not valid YAML" in first
    assert "line 3" in message  # where the unclosed mapping starts


def test_bad_yaml_message_is_one_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "types: [inst, dataset\n")
    assert "\n" not in message


def test_missing_file_raises_registry_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(RegistryError, match="cannot read the relation registry") as info:
        load_registry(path)
    assert str(path) in str(info.value)


# -- digest ---------------------------------------------------------------------------------------

BASE = """
    types:
      inst:
        root: {table: s, key: id}
        tables:
          - {table: a, key: s_id}
          - {table: b, key: a_id, parent: a, files: [url]}
"""


def digest_of(tmp_path: Path, body: str, name: str) -> str:
    return load_registry(write(tmp_path, body, name)).get("inst").digest()


def test_digest_is_stable_for_the_same_content(tmp_path: Path) -> None:
    first = digest_of(tmp_path, BASE, "one.yaml")
    assert len(first) == 64 and int(first, 16) >= 0  # sha256 hex
    assert digest_of(tmp_path, BASE, "two.yaml") == first
    # the same declaration with other formatting, comments and block style
    reformatted = """
        # the same type, written out differently
        types:
          inst:
            root:
              table: s
              key: id
            tables:
              - table: a
                key: s_id
              - key: a_id          # keys in another order
                table: b
                files: [url]
                parent: a
    """
    assert digest_of(tmp_path, reformatted, "three.yaml") == first


def test_digest_does_not_depend_on_child_first_listing(tmp_path: Path) -> None:
    child_first = """
        types:
          inst:
            root: {table: s, key: id}
            tables:
              - {table: b, key: a_id, parent: a, files: [url]}
              - {table: a, key: s_id}
    """
    assert digest_of(tmp_path, child_first, "cf.yaml") == digest_of(tmp_path, BASE, "pf.yaml")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("{table: a, key: s_id}", "{table: a, key: session_id}"),  # a key column
        ("files: [url]", "files: [url, thumb]"),  # a file column
        ("files: [url]", "files: [url], parent_key: code"),  # the parent's column
        ("{table: a, key: s_id}", "{table: a, key: s_id, primary_key: [s_id, n]}"),
        ("{table: s, key: id}", "{table: app.s, key: id}"),  # the root's schema
    ],
)
def test_digest_changes_when_a_table_rule_changes(tmp_path: Path, old: str, new: str) -> None:
    assert old in BASE
    changed = BASE.replace(old, new)
    assert digest_of(tmp_path, changed, "changed.yaml") != digest_of(tmp_path, BASE, "base.yaml")


def test_digest_changes_when_a_table_is_added(tmp_path: Path) -> None:
    more = BASE + "          - {table: c, key: s_id}\n"
    inst = load_registry(write(tmp_path, more, "more.yaml")).get("inst")
    assert inst.rule("c") is not None
    assert inst.digest() != digest_of(tmp_path, BASE, "base.yaml")
