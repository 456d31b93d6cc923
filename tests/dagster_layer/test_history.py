"""`htd-pipelines history`: past runs from Dagster's run storage (what crontab_history held)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from htd_pipelines.cli.main import main


@pytest.fixture
def cli_env(seeded_env, monkeypatch, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = seeded_env(3, seed=5, test_fraction=0)
    return env


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_history_lists_runs_with_their_htd_tags(cli_env, capsys) -> None:
    code, out, _ = run(capsys, "history")
    assert (code, out.strip()) == (0, "no runs")

    first, second = (str(i) for i in cli_env.ids[:2])
    code, _, err = run(capsys, "backup", "--type", "inst", first, "--uid", "alice")
    assert code == 0, err
    assert run(capsys, "backup", "--type", "inst", second, "--keep-source")[0] == 0
    code, out, _ = run(capsys, "backups", "--json", "--relation-id", first)
    backup_id = json.loads(out)[0]["id"]
    assert run(capsys, "restore", str(backup_id), "--uid", "bob")[0] == 0

    code, out, _ = run(capsys, "history", "--json")
    assert code == 0
    runs = json.loads(out)
    backups = [r for r in runs if r["job"] == "backup_job"]
    assert [r["tags"].get("htd/relation_id") for r in backups] == [second, first]  # newest first
    assert {
        "htd/relation_id": first,
        "htd/relation_ids": first,
        "htd/type": "inst",
        "htd/uid": "alice",
    }.items() <= backups[1]["tags"].items()
    for r in runs:
        assert r["status"] == "SUCCESS"
        start = dt.datetime.fromisoformat(r["start_time"])
        end = dt.datetime.fromisoformat(r["end_time"])
        assert start.tzinfo is not None and start <= end
        assert r["duration_seconds"] == pytest.approx((end - start).total_seconds(), abs=1)
        assert not any(k.startswith("dagster/") for k in r["tags"])
    [restore] = [r for r in runs if r["job"] == "restore_job"]
    assert {"htd/backup_id": str(backup_id), "htd/uid": "bob"}.items() <= restore["tags"].items()

    # --job filters, --limit caps per job
    code, out, _ = run(capsys, "history", "--job", "backup_job", "--json")
    assert {r["job"] for r in json.loads(out)} == {"backup_job"} and len(json.loads(out)) == 2
    code, out, _ = run(capsys, "history", "--job", "restore_job", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [restore["run_id"]]
    code, out, _ = run(capsys, "history", "--job", "backup_job", "--limit", "1", "--json")
    assert [r["tags"]["htd/relation_id"] for r in json.loads(out)] == [second]

    # the human table
    code, out, _ = run(capsys, "history", "--job", "backup_job")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["job", "run_id", "status", "started"]
    assert len(lines) == 3
    assert f"htd/relation_id={first}" in lines[2] and "htd/uid=alice" in lines[2]
    assert backups[0]["run_id"] in lines[1] and "SUCCESS" in lines[1]
    code, out, _ = run(capsys, "history", "--job", "test_session_cleanup_job")
    assert out.strip() == "no runs of test_session_cleanup_job"
