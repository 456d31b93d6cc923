"""The relation registry: structural checks without a database, schema checks on every dialect."""

from __future__ import annotations

import textwrap

import pytest
import sqlalchemy as sa

from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.registry.resolved import resolve_type
from htd_pipelines.registry.spec import RegistryError, load_registry, parse_registry
from htd_pipelines.settings import DEMO_RELATIONS_FILE


def reg(body: str):
    return parse_registry(textwrap.dedent(body), "rel.yaml")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("types: {}", "rel.yaml: expected a top-level 'types:'"),
        ("types: [", "rel.yaml: not valid YAML"),
        (
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: a, key: sid}
                  - {table: a, key: sid}
            """,
            "rel.yaml: type inst: table 'a' is listed twice",
        ),
        (
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: a, key: sid, parent: nowhere}
            """,
            "table 'a' names unknown parent 'nowhere'",
        ),
        (
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: "a; drop table s", key: sid}
            """,
            "'a; drop table s' is not an optionally schema-qualified name",
        ),
        (
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: a, key: "sid)"}
            """,
            "(table a): key: 'sid)' is not a plain name",
        ),
        (
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: a, key: x, parent: b}
                  - {table: b, key: y, parent: a}
            """,
            "parent cycle a -> b -> a",
        ),
        (
            """
            types:
              inst:
                root: {table: s, key: id}
                tables:
                  - {table: a, key: x, colour: red}
            """,
            "unknown field(s) colour",
        ),
    ],
)
def test_structural_errors_name_the_file_type_and_table(body: str, message: str) -> None:
    with pytest.raises(RegistryError) as err:
        reg(body)
    assert message in str(err.value)


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(RegistryError, match="nope.yaml: cannot read"):
        load_registry(tmp_path / "nope.yaml")


def test_schema_qualified_names_are_accepted() -> None:
    r = reg(
        """
        types:
          customer:
            root: {table: public.customer, key: customer_id}
            tables:
              - {table: public.invoice, key: customer_id}
        """
    )
    assert r.get("customer").tables[0].schema == "public"
    assert r.get("customer").tables[0].slug == "public__invoice"
    with pytest.raises(RegistryError, match="unknown backup type 'nope'"):
        r.get("nope")


@pytest.fixture
def demo_engine(db_url):
    engine = get_engine(db_url)
    create_demo_schema(engine)
    return engine


def test_demo_registry_resolves_parents_first(demo_engine) -> None:
    resolved = resolve_type(demo_engine, load_registry(DEMO_RELATIONS_FILE).get("inst"))
    order = [t.name for t in resolved.tables]
    assert order[0] == "process_session"
    assert order.index("session_task") < order.index("task_log")
    # the database's own FK session_task.node_id -> session_node puts nodes before tasks
    assert order.index("session_node") < order.index("session_task")
    task_log = resolved.table("task_log")
    assert task_log.parent.name == "session_task" and task_log.parent_key == "id"
    assert resolved.table("attachment").rule.files == ("remote_url",)


CHILD_FIRST = """
    types:
      inst:
        root: {table: process_session, key: id}
        tables:
          - {table: task_log, key: task_id, parent: session_task}
          - {table: attachment, key: sess_id, files: [remote_url]}
          - {table: session_task, key: sess_id}
          - {table: session_node, key: sess_id}
    """


def test_children_listed_before_their_parent_are_put_after_it() -> None:
    order = [r.table for r in reg(CHILD_FIRST).get("inst").tables]
    # each parent moves ahead of its children; the rest keeps the file's order
    assert order == ["attachment", "session_task", "task_log", "session_node"]


def test_child_first_file_resolves_with_the_parent_first(demo_engine) -> None:
    resolved = resolve_type(demo_engine, reg(CHILD_FIRST).get("inst"), "rel.yaml")
    order = [t.name for t in resolved.tables]
    assert order[0] == "process_session"
    assert order.index("session_task") < order.index("task_log")
    # the database's FK session_task.node_id -> session_node still orders nodes before tasks
    assert order.index("session_node") < order.index("session_task")
    task_log = resolved.table("task_log")
    assert task_log.parent.name == "session_task" and task_log.parent_key == "id"


def _check(engine, body: str) -> str:
    with pytest.raises(RegistryError) as err:
        resolve_type(engine, reg(body).get("inst"), "rel.yaml")
    return str(err.value)


def test_live_schema_errors_name_table_and_column(demo_engine) -> None:
    msg = _check(
        demo_engine,
        """
        types:
          inst:
            root: {table: process_session, key: id}
            tables: [{table: no_such_table, key: sess_id}]
        """,
    )
    assert "rel.yaml: type inst: table 'no_such_table' does not exist" in msg
    msg = _check(
        demo_engine,
        """
        types:
          inst:
            root: {table: process_session, key: id}
            tables: [{table: session_task, key: session_ident}]
        """,
    )
    assert "table 'session_task' has no column 'session_ident' (key)" in msg
    msg = _check(
        demo_engine,
        """
        types:
          inst:
            root: {table: process_session, key: id}
            tables: [{table: attachment, key: sess_id, files: [url_of_file]}]
        """,
    )
    assert "has no column 'url_of_file' (files)" in msg


def test_table_without_primary_key_needs_one_declared(demo_engine) -> None:
    with demo_engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE session_tag (sess_id BIGINT NOT NULL, tag VARCHAR(20))"))
    body = """
        types:
          inst:
            root: {table: process_session, key: id}
            tables: [{table: session_tag, key: sess_id%s}]
        """
    assert "table 'session_tag' has no primary key; declare one" in _check(demo_engine, body % "")
    ok = resolve_type(demo_engine, reg(body % ", primary_key: [sess_id, tag]").get("inst"))
    assert ok.table("session_tag").primary_key == ("sess_id", "tag")


def test_foreign_key_cycle_is_reported(demo_engine) -> None:
    sqlite = demo_engine.dialect.name == "sqlite"
    # SQLite accepts a forward reference; the servers get the second FK by ALTER TABLE
    fk_a = ", FOREIGN KEY (b_id) REFERENCES cyc_b (id)" if sqlite else ""
    with demo_engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE cyc_a (id INTEGER PRIMARY KEY, sess_id BIGINT, b_id INTEGER{fk_a})"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE cyc_b (id INTEGER PRIMARY KEY, sess_id BIGINT, a_id INTEGER, "
                "FOREIGN KEY (a_id) REFERENCES cyc_a (id))"
            )
        )
        if not sqlite:
            conn.execute(
                sa.text(
                    "ALTER TABLE cyc_a ADD CONSTRAINT fk_cyc "
                    "FOREIGN KEY (b_id) REFERENCES cyc_b (id)"
                )
            )
    msg = _check(
        demo_engine,
        """
        types:
          inst:
            root: {table: process_session, key: id}
            tables: [{table: cyc_a, key: sess_id}, {table: cyc_b, key: sess_id}]
        """,
    )
    assert "cycle among tables 'cyc_a', 'cyc_b'" in msg
