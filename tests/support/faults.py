"""Kill points for crash tests, installed by patching the code in the process under test (a
child started by the test): production code has no fault hook of its own."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
from sqlalchemy.engine import Connection

from htd_pipelines import restore
from htd_pipelines.registry.resolved import TablePlan


def pause_after_insert(table: str, flag: str | Path, *, seconds: float = 60) -> None:
    """After the restore has inserted `table` (inside its transaction), create `flag` and
    sleep, so that the test can kill the process at that point."""
    real = restore.insert_rows

    def insert_then_pause(conn: Connection, tplan: TablePlan, data: pa.Table) -> object:
        sent = real(conn, tplan, data)
        if tplan.name == table:
            Path(flag).touch()
            time.sleep(seconds)
        return sent

    restore.insert_rows = insert_then_pause
