"""A configured htd-pipelines environment for one test: database, registry, snapshot folder."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from dagster import DagsterInstance, Definitions

from htd_pipelines import settings
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.store.snapshots import SnapshotStore


@dataclass
class HtdEnv:
    url: str
    snapshot_dir: Path
    relations_file: str
    engine: sa.Engine

    def defs(self) -> Definitions:
        from htd_pipelines.definitions import build_definitions

        return build_definitions()

    def store(self) -> SnapshotStore:
        return SnapshotStore(str(self.snapshot_dir))

    def run_backup(
        self,
        relation_ids: list,
        *,
        type_name: str = "inst",
        uid: str | None = "tester",
        keep_source: bool = False,
        instance: DagsterInstance | None = None,
    ):
        from htd_pipelines.jobs.run_config import backup_run_config, backup_tags

        job = self.defs().resolve_job_def("backup_job")
        return job.execute_in_process(
            run_config=backup_run_config(type_name, relation_ids, uid, keep_source),
            instance=instance or DagsterInstance.ephemeral(),
            tags=backup_tags(type_name, relation_ids, uid),
            raise_on_error=False,
        )

    def count(self, table: str, where: str = "") -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} {where}")).scalar_one()


def make_env(monkeypatch, db_url: str, tmp_path: Path, relations_file: str | None = None) -> HtdEnv:
    snap = tmp_path / "snapshots"
    relations = relations_file or str(settings.DEMO_RELATIONS_FILE)
    monkeypatch.setenv(settings.DATABASE_URL_ENV, db_url)
    monkeypatch.setenv(settings.SNAPSHOT_URI_ENV, str(snap))
    monkeypatch.setenv(settings.RELATIONS_FILE_ENV, relations)
    monkeypatch.setenv(settings.HOME_ENV, str(tmp_path / "home"))
    return HtdEnv(db_url, snap, relations, get_engine(db_url))


def norm(value: object) -> object:
    """A value as compared across the driver and the snapshot (same meaning, same Python form)."""
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, str):
        s = value.strip()
        if s[:1] in "{[":
            try:
                return json.loads(s)
            except ValueError:
                return value
        return value
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, decimal.Decimal):
        return value.normalize()
    if isinstance(value, float):
        return value
    return value


def table_rows(engine: sa.Engine, table: str, where: str = "", params: dict | None = None):
    """Rows of a table as {pk-tuple: {column: normalized value}}, values as the driver returns
    them (what is stored, without SQLAlchemy's type processing)."""
    insp = sa.inspect(engine)
    pk = insp.get_pk_constraint(table)["constrained_columns"]
    prep = engine.dialect.identifier_preparer
    sql = f"SELECT * FROM {prep.quote(table)} {where}"
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(sql, params or {}).mappings().all()
    return {tuple(r[c] for c in pk): {k: norm(v) for k, v in r.items()} for r in rows}
