"""Relation ids of any character and length: snapshot folders, Dagster tags, strict integer ids,
and a whole backup + restore through the CLI of ids like bob@example.com."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster._utils.tags import normalize_tags

from htd_pipelines.backup import BackupError, coerce_ids, plan_backup, resolved
from htd_pipelines.cli.main import main
from htd_pipelines.jobs.run_config import backup_tags, session_tag
from htd_pipelines.registry.relation_ids import MAX_LENGTH, path_segment, tag_value
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.store import catalog
from htd_pipelines.store.snapshots import SnapshotStore, safe_part

ODD_IDS = [
    "..",
    ".",
    "a/b",
    "a\\b",
    "../../etc",
    "bob@example.com",
    "with space",
    "会话-ünïcödé-🔥",
    "x" * 300,
    "é" * 300,
    "~a",
    "%41",
    "A",
    "\x10" + "0",  # the old %-escaping wrote this one and 'Ā' (U+0100) as '%100'
    "\u0100",
    "a:b,c",
]


def test_plain_ids_keep_their_folder() -> None:
    for rid in ["12", "0", "abc_DEF-9", "x" * 100]:
        assert path_segment(rid) == rid == safe_part(rid)


def test_folders_are_distinct_one_segment_inside_the_type_folder(tmp_path: Path) -> None:
    store = SnapshotStore(str(tmp_path / "snap"))
    type_dir = Path(store.root) / "inst"
    folders = {}
    for rid in ODD_IDS:
        seg = path_segment(rid)
        assert "/" not in seg and "\\" not in seg and seg not in (".", "..", "")
        assert len(seg.encode()) <= 120 and seg.isascii()
        version = store.reserve_version("inst", rid, 1)
        path = Path(store.full(store.backup_dir("inst", rid, version)))
        assert path.resolve().parent.parent == type_dir.resolve()
        assert path.is_dir()
        folders[rid] = path.parent
    assert len(set(folders.values())) == len(ODD_IDS)  # no two ids share a folder
    # every folder is new: version 1 each (none was taken by another id)
    assert all((f / "v000001").is_dir() for f in folders.values())
    # two long ids that differ only at the end, and two that differ only in escaped characters
    assert path_segment("é" * 299 + "a") != path_segment("é" * 299 + "b")
    assert path_segment("a@b") != path_segment("a#b") != path_segment("a%40b")


def test_tag_values_are_valid_dagster_tags_and_distinct() -> None:
    assert tag_value("12") == "12" and tag_value("abc.DEF_9-x") == "abc.DEF_9-x"
    rendered = {}
    for rid in ODD_IDS + ["x" * 64]:
        value = tag_value(rid)
        assert len(value) <= 63 and re.fullmatch(r"[A-Za-z0-9_.-]*", value)
        normalize_tags({"htd/relation_id": value}, strict=True)  # Dagster's own check
        rendered[rid] = value
    assert len(set(rendered.values())) == len(rendered)
    assert tag_value("bob@example.com").startswith("bob_example.com-")
    tags = backup_tags("inst", ["bob@example.com", "a,b"], "alice")
    assert tags["htd/relation_ids"].split(",") == [tag_value("bob@example.com"), tag_value("a,b")]
    one = backup_tags("inst", ["é" * 200], None)
    assert one["htd/relation_id"] == tag_value("é" * 200)
    assert len(one["htd/session"]) <= 63 and one["htd/session"].startswith("inst:")
    assert session_tag("inst", "12") == "inst:12"


BAD_INT_IDS = [
    "1_2",
    "+13",
    "١٤",
    "１２",
    " 7",
    "7 ",
    "007",
    "-0",
    "",
    "1e3",
    "0x10",
    "²",
    "9" * 30,
]


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_integer_ids_must_be_canonical_decimal(seeded_env) -> None:
    env = seeded_env(3, seed=1, test_fraction=0)
    registry = load_registry(env.relations_file)
    rtype = resolved(env.engine, registry, "inst", "t")
    assert coerce_ids(rtype, ["12", "0", "-5", 7]) == [12, 0, -5, 7]
    for bad in BAD_INT_IDS:
        with pytest.raises(BackupError) as err:
            coerce_ids(rtype, [str(env.ids[0]), bad])
        message = str(err.value)
        assert "\n" not in message and "process_session.id" in message
        assert repr(bad if len(bad) <= 80 else bad[:77] + "...") in message
    # refused before anything: no catalog row, no snapshot folder
    with pytest.raises(BackupError, match="'1_2'"):
        plan_backup(
            env.engine,
            registry,
            env.store(),
            type_name="inst",
            relation_ids=[str(env.ids[0]), "1_2"],
            uid=None,
            keep_source=False,
            run_id="r1",
        )
    assert not env.snapshot_dir.exists() or not any(env.snapshot_dir.rglob("v*"))
    assert not sa.inspect(env.engine).has_table("back_up") or env.count("back_up") == 0


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_too_long_ids_are_refused_before_anything(seeded_env, tmp_path) -> None:
    env = _accounts_env(seeded_env, tmp_path)
    registry = load_registry(env.relations_file)
    with pytest.raises(BackupError, match=f"at most {MAX_LENGTH} are kept"):
        plan_backup(
            env.engine,
            registry,
            env.store(),
            type_name="acct",
            relation_ids=["y" * (MAX_LENGTH + 1)],
            uid=None,
            keep_source=False,
            run_id="r1",
        )


# -- a registry whose root key is a varchar ------------------------------------------------------

REGISTRY = """\
types:
  acct:
    root: {table: acct, key: id}
    tables:
      - {table: acct_item, key: acct_id}
"""

ROUND_TRIP_IDS = ["bob@example.com", "ünï 会话/../" + "é" * 189 + "!"]  # the second: 200 chars


def _accounts_env(seeded_env, tmp_path: Path):
    registry = tmp_path / "acct.yaml"
    registry.write_text(REGISTRY)
    env = seeded_env(0, relations_file=str(registry))
    with env.engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE acct (id VARCHAR(255) NOT NULL PRIMARY KEY, name VARCHAR(50))")
        )
        conn.execute(
            sa.text(
                "CREATE TABLE acct_item (id INTEGER NOT NULL PRIMARY KEY, "
                "acct_id VARCHAR(255) NOT NULL REFERENCES acct (id), qty INTEGER)"
            )
        )
        for n, rid in enumerate([*ROUND_TRIP_IDS, "other"]):
            conn.execute(sa.text("INSERT INTO acct VALUES (:id, :name)"), {"id": rid, "name": n})
            for k in range(3):
                conn.execute(
                    sa.text("INSERT INTO acct_item VALUES (:id, :acct, :qty)"),
                    {"id": n * 10 + k, "acct": rid, "qty": k},
                )
    return env


@pytest.fixture
def accounts(seeded_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return _accounts_env(seeded_env, tmp_path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_backup_and_restore_of_odd_ids_through_the_cli(accounts, capsys) -> None:
    assert len(ROUND_TRIP_IDS[1]) == 200
    env = accounts
    type_dir = (env.snapshot_dir / "acct").resolve()
    for rid in ROUND_TRIP_IDS:
        code, out, err = run(capsys, "backup", "--type", "acct", rid, "--uid", "alice")
        assert code == 0, err
        assert "source rows deleted" in out
        assert env.count("acct_item", f"WHERE acct_id = '{rid}'") == 0

        code, out, _ = run(capsys, "backups", "--json", "--type", "acct")
        [listed] = [b for b in json.loads(out) if b["relation_id"] == rid]
        with env.engine.connect() as conn:
            record = catalog.get_backup(conn, listed["id"])
        manifest = record.manifest
        assert manifest.relation_id == rid
        folder = (env.snapshot_dir / manifest.location).resolve()
        assert folder.parent.parent == type_dir and folder.is_dir()
        assert folder.parent.name == path_segment(rid)

        code, out, err = run(capsys, "restore", str(listed["id"]), "--uid", "alice")
        assert code == 0, err
        assert env.count("acct_item", f"WHERE acct_id = '{rid}'") == 3
        with env.engine.connect() as conn:
            assert catalog.get_backup(conn, listed["id"]).is_reback == 1

    # the runs are tagged with the rendered ids (valid Dagster tags)
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.get() as instance:
        runs = instance.get_run_records(RunsFilter(job_name="backup_job"))
        tagged = {r.dagster_run.tags["htd/relation_id"] for r in runs}
    assert tagged == {tag_value(r) for r in ROUND_TRIP_IDS}
    assert env.count("acct", "WHERE id = 'other'") == 1


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_a_refused_id_commits_nothing(accounts, capsys) -> None:
    env = accounts
    code, _, err = run(capsys, "backup", "--type", "acct", "nobody@example.com")
    assert code == 1 and "unknown relation id(s) nobody@example.com" in err
    assert env.count("back_up") == 0 if sa.inspect(env.engine).has_table("back_up") else True
    assert not any(env.snapshot_dir.rglob("manifest.json"))


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
def test_an_older_catalog_is_widened_for_long_ids(db_url) -> None:
    from htd_pipelines.dialects.engine import get_engine

    engine = get_engine(db_url)
    catalog.ensure_catalog(engine)
    with engine.begin() as conn:  # as catalogs were created before: VARCHAR(191)
        for table in ("back_up", "htd_marker_claim"):
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    f"ALTER TABLE {table} ALTER COLUMN relation_id TYPE VARCHAR(191)"
                )
            else:
                conn.exec_driver_sql(
                    f"ALTER TABLE {table} MODIFY relation_id VARCHAR(191) NOT NULL"
                )
    catalog.forget_catalog_cache()
    catalog.ensure_catalog(engine)
    inspector = sa.inspect(engine)
    for table in ("back_up", "htd_marker_claim"):
        [column] = [c for c in inspector.get_columns(table) if c["name"] == "relation_id"]
        assert column["type"].length == MAX_LENGTH
