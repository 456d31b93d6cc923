"""The code location loads everything once, without needing the database to be up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import Definitions

ROOT = Path(__file__).resolve().parents[2]


def test_definitions_load_with_the_database_down(monkeypatch) -> None:
    monkeypatch.setenv("HTD_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    from htd_pipelines.definitions import build_definitions

    defs = build_definitions()
    Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("backup_job")
    ops = {n.name for n in job.nodes}
    assert {"plan_backup", "record_backup", "delete_source", "extract_task_log"} <= ops
    assert all(n.definition.description for n in job.nodes)
    assert job.description


def test_dagster_definitions_validate_passes() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTD_")}
    env["DAGSTER_HOME"] = str(ROOT)
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr
