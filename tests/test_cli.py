"""The htd-pipelines command line: demo, backup, backups, show, relations check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, RunsFilter
from htd_env import make_env

from htd_pipelines.cli import main
from htd_pipelines.demo.schema import create_demo_schema
from htd_pipelines.demo.seed import seed_demo


@pytest.fixture
def cli_env(monkeypatch, db_url, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    env = make_env(monkeypatch, db_url, tmp_path)
    create_demo_schema(env.engine)
    env.ids = seed_demo(env.engine, 4, seed=3, test_fraction=0)
    return env


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_backup_list_and_show(cli_env, capsys) -> None:
    target = str(cli_env.ids[0])
    code, out, _ = run(capsys, "backup", "--type", "inst", target, "--uid", "alice")
    assert code == 0
    assert f"inst {target} v1" in out and "source rows deleted" in out

    code, out, _ = run(capsys, "backups", "--json")
    [listed] = json.loads(out)
    assert (listed["relation_id"], listed["uid"], listed["is_reback"]) == (target, "alice", 0)

    code, out, _ = run(capsys, "show", "--type", "inst", target, "--json")
    doc = json.loads(out)
    assert doc["backup"]["id"] == listed["id"]
    assert [r["id"] for r in doc["tables"]["process_session"]] == [int(target)]
    assert len(doc["tables"]["session_task"]) == listed["rows"] - sum(
        len(v) for k, v in doc["tables"].items() if k != "session_task"
    )
    code, out, _ = run(capsys, "show", "--type", "inst", target)
    assert "process_session" in out and "task_log" in out

    # the run is in the instance's run history, tagged with the session
    with DagsterInstance.get() as instance:
        records = instance.get_run_records(
            RunsFilter(job_name="backup_job", tags={"htd/relation_id": target})
        )
    assert len(records) == 1 and records[0].dagster_run.tags["htd/uid"] == "alice"


def test_errors_are_clear_and_exit_non_zero(cli_env, capsys) -> None:
    code, _, err = run(capsys, "backup", "--type", "inst", "987654")
    assert code == 1 and "unknown relation id(s) 987654 for type 'inst'" in err
    code, _, err = run(capsys, "backup", "--type", "nope", "1")
    assert code == 1 and "unknown backup type 'nope'" in err
    code, _, err = run(capsys, "show", "--type", "inst", "987654")
    assert code == 1 and "no backup of type 'inst', relation id 987654" in err


def test_relations_check_prints_the_plan(cli_env, capsys, monkeypatch, tmp_path) -> None:
    code, out, _ = run(capsys, "relations", "check")
    assert code == 0
    lines = out.splitlines()
    order = [
        ln.split()[0] for ln in lines if ln.startswith(("process_session", "session_", "task_"))
    ]
    assert order.index("process_session") < order.index("session_task") < order.index("task_log")
    assert "extract_task_log" in out and "delete order: session_operate_log" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text("types:\n  inst:\n    root: {table: process_session, key: idx}\n")
    monkeypatch.setenv("HTD_RELATIONS_FILE", str(bad))
    code, _, err = run(capsys, "relations", "check")
    assert code == 1
    assert f"{bad}: type inst: table 'process_session' has no column 'idx' (key)" in err


def test_demo_command_on_the_embedded_default(tmp_path) -> None:
    """The README's first command: a fresh folder, no configuration, the installed script."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTD_", "DAGSTER_"))}
    script = Path(sys.executable).with_name("htd-pipelines")
    proc = subprocess.run(
        [str(script), "demo", "--sessions", "8", "--backup", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("source rows deleted") == 2
    assert (tmp_path / ".htd" / "demo.sqlite").exists()
    assert list((tmp_path / ".htd" / "snapshots" / "inst").glob("*/v000001/manifest.json"))
    listed = subprocess.run(
        [str(script), "backups", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert len(json.loads(listed.stdout)) == 2
