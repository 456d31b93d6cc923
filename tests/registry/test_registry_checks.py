"""Registry checks against the live schema (resolve_type, `htd-pipelines relations check`):
a parent_key that does not identify one parent row, and PostgreSQL partitions whose foreign
keys decide the insert and delete order."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from htd_pipelines.cli.main import main
from htd_pipelines.registry.resolved import _order, resolve_type
from htd_pipelines.registry.spec import RegistryError, load_registry
from htd_pipelines.store import catalog


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _registry(tmp_path, body: str):
    path = tmp_path / "relations.yaml"
    path.write_text(body)
    return path


# -- a grandchild keyed to one column of its parent ----------------------------------------------

GROUPS = """\
types:
  grp:
    root: {table: rc_session, key: id}
    tables:
      - {table: rc_group, key: sess_id}
      - {table: rc_item, key: grp_code, parent: rc_group, parent_key: %s}
"""


def _groups_schema(engine: sa.Engine) -> None:
    partial = (
        "CREATE UNIQUE INDEX rc_group_partial ON rc_group (partial_code) WHERE partial_code > 0"
        if engine.dialect.name in ("postgresql", "sqlite")
        else None
    )
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE rc_session (id INTEGER NOT NULL PRIMARY KEY)"))
        conn.execute(
            sa.text(
                "CREATE TABLE rc_group (sess_id INTEGER NOT NULL, grp INTEGER NOT NULL, "
                "code INTEGER NOT NULL, indexed_code INTEGER NOT NULL, "
                "pair_code INTEGER NOT NULL, partial_code INTEGER NOT NULL, "
                "PRIMARY KEY (sess_id, grp), UNIQUE (code), UNIQUE (pair_code, grp))"
            )
        )
        conn.execute(sa.text("CREATE UNIQUE INDEX rc_group_ix ON rc_group (indexed_code)"))
        if partial:
            conn.execute(sa.text(partial))
        conn.execute(
            sa.text(
                "CREATE TABLE rc_item (id INTEGER NOT NULL PRIMARY KEY, "
                "grp_code INTEGER NOT NULL, note VARCHAR(20))"
            )
        )


def _resolve(engine: sa.Engine, path) -> None:
    registry = load_registry(path)
    resolve_type(engine, registry.get("grp"), registry.path)


def test_a_parent_key_that_is_not_unique_in_its_parent_is_refused(db_url, tmp_path) -> None:
    from htd_pipelines.dialects.engine import get_engine

    engine = get_engine(db_url)
    _groups_schema(engine)
    refused = ["grp", "sess_id", "pair_code"]  # one column of the PK / of a composite UNIQUE
    if engine.dialect.name in ("postgresql", "sqlite"):
        refused.append("partial_code")  # a partial unique index does not make it unique
    for column in refused:
        path = _registry(tmp_path, GROUPS % column)
        with pytest.raises(RegistryError) as err:
            _resolve(engine, path)
        message = str(err.value)
        assert "\n" not in message
        assert (
            f"{path}: type grp: table 'rc_item': parent_key '{column}' is not unique in parent "
            "'rc_group'" in message
        )
    for column in ("code", "indexed_code"):  # a unique constraint, a unique index
        _resolve(engine, _registry(tmp_path, GROUPS % column))


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_relations_check_names_the_parent_key_in_one_line(
    seeded_env, tmp_path, monkeypatch, capsys
) -> None:
    env = seeded_env(0)
    _groups_schema(env.engine)
    path = _registry(tmp_path, GROUPS % "grp")
    monkeypatch.setenv("HTD_RELATIONS_FILE", str(path))
    code, out, err = run(capsys, "relations", "check")
    assert code == 1 and "ok" not in out.split()
    [line] = err.strip().splitlines()
    assert line == (
        f"error: {path}: type grp: table 'rc_item': parent_key 'grp' is not unique in parent "
        "'rc_group' (not its whole primary key, no unique constraint or index on it alone): "
        "the select would repeat rows; key the table to a unique column of the parent"
    )
    # the other types of the file are still checked and printed
    path.write_text(
        GROUPS % "grp"
        + "  fine:\n    root: {table: rc_session, key: id}\n"
        + "    tables:\n      - {table: rc_group, key: sess_id}\n"
    )
    code, out, err = run(capsys, "relations", "check")
    assert code == 1 and "type fine" in out and len(err.strip().splitlines()) == 1


# -- PostgreSQL partitions with their own foreign keys -------------------------------------------

PARTITIONED = """\
types:
  pt:
    root: {table: pt_session, key: id}
    tables:
      - {table: pt_event, key: sess_id}
      - {table: pt_kind, key: sess_id}
"""


def _partitioned_schema(engine: sa.Engine) -> None:
    statements = [
        "CREATE TABLE pt_session (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE pt_kind (id INTEGER PRIMARY KEY, "
        "sess_id INTEGER NOT NULL REFERENCES pt_session (id), label TEXT)",
        # no foreign key on the partitioned table: only on its partitions
        "CREATE TABLE pt_event (id INTEGER NOT NULL, sess_id INTEGER NOT NULL, "
        "kind_id INTEGER NOT NULL, at TIMESTAMPTZ, PRIMARY KEY (id, sess_id)) "
        "PARTITION BY HASH (sess_id)",
    ]
    for r in range(2):
        statements += [
            f"CREATE TABLE pt_event_{r} PARTITION OF pt_event "
            f"FOR VALUES WITH (MODULUS 2, REMAINDER {r})",
            f"ALTER TABLE pt_event_{r} ADD FOREIGN KEY (kind_id) REFERENCES pt_kind (id)",
            f"ALTER TABLE pt_event_{r} ADD FOREIGN KEY (sess_id) REFERENCES pt_session (id)",
        ]
    statements += [
        "INSERT INTO pt_session VALUES (1, 'one'), (2, 'two'), (3, 'three')",
        "INSERT INTO pt_kind SELECT s * 10 + k, s, 'k' || k FROM generate_series(1, 3) s, "
        "generate_series(1, 2) k",
        "INSERT INTO pt_event SELECT s * 100 + e, s, s * 10 + 1 + mod(e, 2), "
        "now() - e * interval '1 minute' FROM generate_series(1, 3) s, generate_series(1, 7) e",
    ]
    with engine.begin() as conn:
        for sql in statements:
            conn.exec_driver_sql(sql)


@pytest.mark.parametrize("dialect", ["postgresql"])
def test_foreign_keys_of_partitions_order_the_tables(seeded_env, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    path = _registry(tmp_path, PARTITIONED)
    env = seeded_env(0, relations_file=str(path))
    _partitioned_schema(env.engine)

    registry = load_registry(path)
    rtype = resolve_type(env.engine, registry.get("pt"), registry.path)
    assert [t.name for t in rtype.tables] == ["pt_session", "pt_kind", "pt_event"]
    plans = {t.name: t for t in rtype.tables}
    without = _order(registry.get("pt"), plans, "x")  # what reflection alone sees
    assert [t.name for t in without] == ["pt_session", "pt_event", "pt_kind"]

    code, out, err = run(capsys, "relations", "check")
    assert code == 0, err
    assert "delete order: pt_event -> pt_kind -> pt_session" in out

    before = env.count("pt_event", "WHERE sess_id = 2"), env.count("pt_kind", "WHERE sess_id = 2")
    code, out, err = run(capsys, "backup", "--type", "pt", "2")
    assert code == 0, err
    assert "source rows deleted" in out
    assert env.count("pt_event", "WHERE sess_id = 2") == env.count("pt_kind", "WHERE sess_id = 2")
    assert env.count("pt_kind", "WHERE sess_id = 2") == 0

    code, out, _ = run(capsys, "backups", "--json")
    [listed] = json.loads(out)
    code, out, err = run(capsys, "restore", str(listed["id"]))
    assert code == 0, err
    after = env.count("pt_event", "WHERE sess_id = 2"), env.count("pt_kind", "WHERE sess_id = 2")
    assert after == before == (7, 2)
    with env.engine.connect() as conn:
        assert catalog.get_backup(conn, listed["id"]).is_reback == 1
    assert env.count("pt_event") == 21


# -- a table outside the type that a delete would change ---------------------------------------

OUTSIDE = """\
types:
  doc:
    root: {table: oc_doc, key: id}
    tables:
      - {table: oc_line, key: doc_id}
"""


@pytest.mark.parametrize("rule", ["CASCADE", "SET NULL", "NO ACTION"])
def test_a_table_outside_the_type_changed_by_the_delete_is_refused(db_url, tmp_path, rule) -> None:
    """`oc_audit` is not in the type but its foreign key onto `oc_line` says ON DELETE CASCADE
    (or SET NULL): a backup's delete would delete (or rewrite) its rows, which no backup holds.
    The type is refused when it is resolved, naming both tables and the rule; with NO ACTION
    the delete would fail instead of losing rows, so the type resolves."""
    from htd_pipelines.dialects.engine import get_engine

    engine = get_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE oc_doc (id INTEGER NOT NULL PRIMARY KEY)"))
        conn.execute(
            sa.text(
                "CREATE TABLE oc_line (id INTEGER NOT NULL PRIMARY KEY, doc_id INTEGER NOT NULL,"
                " FOREIGN KEY (doc_id) REFERENCES oc_doc (id) ON DELETE CASCADE)"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE oc_audit (id INTEGER NOT NULL PRIMARY KEY, line_id INTEGER,"
                f" FOREIGN KEY (line_id) REFERENCES oc_line (id) ON DELETE {rule})"
            )
        )
    registry = load_registry(_registry(tmp_path, OUTSIDE))
    if rule == "NO ACTION":
        resolve_type(engine, registry.get("doc"), registry.path)
        return
    with pytest.raises(RegistryError) as refused:
        resolve_type(engine, registry.get("doc"), registry.path)
    message = str(refused.value)
    assert "oc_audit" in message and "oc_line" in message and f"ON DELETE {rule}" in message


WRONG_PARENT = """\
types:
  doc:
    root: {table: wp_doc, key: id}
    tables:
      - {table: wp_part, key: doc_id}
      - {table: wp_other, key: doc_id}
      - {table: wp_line, key: part_id, parent: %s}
"""


def test_a_key_whose_foreign_key_points_elsewhere_is_refused(db_url, tmp_path) -> None:
    """wp_line.part_id references wp_part.id, but the registry says its parent is wp_other:
    the session's lines would be selected (and deleted) through the wrong parent."""
    from htd_pipelines.dialects.engine import get_engine

    engine = get_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE wp_doc (id INTEGER NOT NULL PRIMARY KEY)"))
        for name in ("wp_part", "wp_other"):
            conn.execute(
                sa.text(
                    f"CREATE TABLE {name} (id INTEGER NOT NULL PRIMARY KEY, doc_id INTEGER NOT "
                    "NULL, FOREIGN KEY (doc_id) REFERENCES wp_doc (id))"
                )
            )
        conn.execute(
            sa.text(
                "CREATE TABLE wp_line (id INTEGER NOT NULL PRIMARY KEY, part_id INTEGER NOT NULL,"
                " FOREIGN KEY (part_id) REFERENCES wp_part (id))"
            )
        )
    wrong = load_registry(_registry(tmp_path, WRONG_PARENT % "wp_other"))
    with pytest.raises(RegistryError, match="wp_line.*foreign key to wp_part.id.*wp_other.id"):
        resolve_type(engine, wrong.get("doc"), wrong.path)
    right = load_registry(_registry(tmp_path, WRONG_PARENT % "wp_part"))
    resolve_type(engine, right.get("doc"), right.path)
