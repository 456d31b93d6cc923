"""The htd-pipelines command line: demo, backup, backups, show, relations check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, RunsFilter

from htd_pipelines.cli.main import main


@pytest.fixture
def cli_env(seeded_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    env = seeded_env(4, seed=3, test_fraction=0)
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

    # a child listed before its declared parent: the registry puts the parent first
    child_first = tmp_path / "child_first.yaml"
    child_first.write_text(
        "types:\n  inst:\n    root: {table: process_session, key: id}\n    tables:\n"
        "      - {table: task_log, key: task_id, parent: session_task}\n"
        "      - {table: session_task, key: sess_id}\n"
    )
    monkeypatch.setenv("HTD_RELATIONS_FILE", str(child_first))
    code, out, err = run(capsys, "relations", "check")
    assert code == 0, err
    assert "delete order: task_log -> session_task -> process_session" in out

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
    assert proc.stderr.strip() == ""  # no Dagster event lines, no telemetry banner
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


def test_a_job_run_prints_its_summary_without_dagster_debug_events(cli_env, capsys) -> None:
    first, second = (str(i) for i in cli_env.ids[:2])
    code, out, err = run(capsys, "backup", "--type", "inst", first, "--keep-source")
    assert code == 0 and f"inst {first} v1" in out
    # none of the run's events below WARNING (Dagster's first-use banner aside)
    assert " - DEBUG - " not in err and " - INFO - " not in err and "STEP_SUCCESS" not in err
    # -v / --verbose: the run's events, as Dagster logs them
    code, out, err = run(capsys, "-v", "backup", "--type", "inst", second, "--keep-source")
    assert code == 0 and f"inst {second} v1" in out
    assert " - DEBUG - " in err and "STEP_SUCCESS" in err


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://postgres:s3cret-pw@127.0.0.1:1/x", 'server at "127.0.0.1", port 1 failed'),
        ("mysql://root:s3cret-pw@127.0.0.1:1/x", "Can't connect to MySQL server on '127.0.0.1'"),
        ("sqlite:////nonexistent-folder/htd.sqlite", "unable to open database file"),
    ],
    ids=["postgresql", "mariadb", "sqlite"],
)
@pytest.mark.parametrize(
    "argv",
    [
        ["relations", "check"],
        ["backups"],
        ["backup", "--type", "inst", "1"],
        ["show", "--type", "inst", "1"],
        ["restore", "1"],
        ["request-restore", "1"],
        ["versions", "list", "--type", "inst", "1"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_an_unreachable_database_is_one_error_line(
    monkeypatch, tmp_path, capsys, url, reason, argv
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("HTD_DATABASE_URL", url)
    monkeypatch.setenv("HTD_SNAPSHOT_URI", str(tmp_path / "snapshots"))
    code, _, err = run(capsys, *argv)
    assert code == 1
    [line] = [ln for ln in err.splitlines() if "dagster.yaml" not in ln]  # one line, no trace
    assert line.startswith("error: database error (OperationalError): ")
    assert reason in line
    assert "s3cret-pw" not in err and "Traceback" not in err


def test_show_of_an_incremental_version_is_the_session_at_that_version(cli_env, capsys) -> None:
    from htd_pipelines.api import load_backup

    sess = str(cli_env.ids[0])
    assert run(capsys, "versions", "backup", "--type", "inst", sess)[0] == 0
    with cli_env.engine.begin() as conn:  # one change: the session renamed
        conn.execute(
            sa.text("UPDATE process_session SET name = 'renamed' WHERE id = :i"), {"i": int(sess)}
        )
    code, out, _ = run(capsys, "versions", "backup", "--type", "inst", sess)
    assert code == 0 and "incremental version 2 on top of 1" in out
    frames = load_backup("inst", sess)  # the read API: the composed state of version 2
    assert sum(len(df) for df in frames.values()) > 1

    code, out, _ = run(capsys, "show", "--type", "inst", sess, "--json")
    doc = json.loads(out)
    assert doc["backup"]["version"] == 2 and doc["manifest"]["kind"] == "incremental"
    assert doc["manifest"]["chain"] == [1, 2]
    assert {t: len(rows) for t, rows in doc["tables"].items()} == {
        t: len(df) for t, df in frames.items()
    }
    [session] = doc["tables"]["process_session"]
    assert session["name"] == "renamed"
    assert sorted(r["id"] for r in doc["tables"]["task_log"]) == sorted(
        frames["task_log"]["id"].tolist()
    )
    # the attachments' remote files, unchanged since version 1, are still the session's
    code, v1_out, _ = run(capsys, "show", "--type", "inst", sess, "--version", "1", "--json")
    v1_files = json.loads(v1_out)["manifest"]["remote_files"]
    assert v1_files and doc["manifest"]["remote_files"] == v1_files

    code, out, _ = run(capsys, "show", "--type", "inst", sess)
    assert "incremental version on top of version 1 (chain 1 -> 2)" in out
    lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.strip()}
    assert lines["process_session"] == ["1", "+0", "~1", "-0"]
    assert lines["task_log"] == [str(len(frames["task_log"])), "unchanged"]


def test_an_unreadable_snapshot_folder_is_one_error_line(cli_env, capsys) -> None:
    from htd_pipelines.api import find_backup

    target = str(cli_env.ids[0])
    assert run(capsys, "backup", "--type", "inst", target)[0] == 0
    folder = cli_env.snapshot_dir / find_backup("inst", target).manifest.location
    session_dir = folder.parent
    session_dir.rename(session_dir.with_name("moved"))
    session_dir.write_text("not a folder")  # the store's path now runs through a file
    code, out, err = run(capsys, "show", "--type", "inst", target)
    assert code == 1 and not out
    [line] = err.splitlines()
    assert line.startswith("error: ") and str(folder) in line and "Not a directory" in line


def test_two_cli_backups_of_one_session_at_once_make_one_backup(cli_env, tmp_path) -> None:
    """Two `htd-pipelines backup` processes for the same session, started together (no run
    queue in between): one backs it up and deletes it; the other is refused naming the run
    that holds the session, or finds it gone. Never two captures of it."""
    target = str(cli_env.ids[1])
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    with DagsterInstance.get():  # its storage exists before two processes open it
        pass
    cmd = [sys.executable, "-m", "htd_pipelines.cli.main", "backup", "--type", "inst", target]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, outcomes
    loser = next(err for code, _, err in outcomes if code != 0)
    assert "being backed up by run" in loser or "unknown relation id" in loser, loser
    with cli_env.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT source_deleted FROM back_up WHERE relation_id = :r"), {"r": target}
        ).all()
        assert [tuple(r) for r in rows] == [(1,)]
        assert conn.execute(
            sa.text("SELECT count(*) FROM process_session WHERE id = :r"), {"r": int(target)}
        ).scalar() == 0
