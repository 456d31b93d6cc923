"""Restore benchmark: restore_backup's throughput against the database's own bulk load, phases, RSS.

    .venv/bin/python benchmarks/bench_restore.py [--rows N] [--dialect postgresql|mariadb|both]
                                                 [--json out.json]

Per dialect, all in the same run:

1. A scratch database gets the demo schema and one session of ``--rows`` rows
   (``seed_large_session``), then ANALYZE; it is dropped at the end whatever happens.
2. The session's rows are exported for the reference (PostgreSQL: ``COPY (SELECT ...) TO STDOUT
   (FORMAT binary)`` per table, kept in memory; MariaDB: one LOAD DATA file per table, written
   from Python in the format ``SELECT ... INTO OUTFILE`` writes).
3. The session is backed up with backup_job's semantics (``backup_sessions``, source deleted):
   the rows are gone and the snapshot is in the ``back_up`` catalog.
4. Reference: the exported rows loaded back into the same indexed, FK-constrained tables,
   parents first, in one transaction, then ROLLBACK (PostgreSQL: ``COPY t (cols) FROM STDIN
   (FORMAT binary)``; MariaDB: ``LOAD DATA LOCAL INFILE``). Best of ``--repeat``.
5. ``restore_backup`` in a child process (its peak RSS is its own), best of ``--repeat``; between
   runs the restored rows are deleted (children first) and the catalog row is un-claimed.
   Then the phases, each on the same data: ``load_snapshot``, ``insert_rows`` per table,
   ``read_rows`` + ``sort_by_key`` + ``differences`` per table (the read-back compare), in one
   transaction that is rolled back. On PostgreSQL also the CSV encoding alone, the sequence
   advance and the read-back's COPY TO STDOUT transfer alone.
6. A table with PASS/FAIL (restore / reference >= 0.8 on PostgreSQL); ``--json PATH`` writes
   every figure.

PostgreSQL timed runs (reference and restore) each start after ``VACUUM`` of the session tables
and a ``CHECKPOINT`` (untimed), so autovacuum and checkpoints stay out of the timings.

The child entry point is this same file with ``--child`` (internal).
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import gc
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Row, log  # noqa: E402

TYPE_NAME = "inst"
TARGET_RATIO = 0.8  # restore rows/s >= 0.8 x reference rows/s (PostgreSQL)
DEFAULT_ROWS = {"postgresql": 1_000_000, "mariadb": 200_000}
REFERENCE_NAME = {
    "postgresql": "COPY FROM STDIN (FORMAT binary)",
    "mariadb": "LOAD DATA LOCAL INFILE",
}
COPY_WRITE_BYTES = 8 << 20  # the reference feeds COPY in 8 MiB writes


# ---------------------------------------------------------------------------- shared


def reset_restore(engine, rtype, ids: list, backup_id: int) -> float:  # noqa: ANN001
    """Undo a restore: delete the session's rows (children first), un-claim the backup."""
    import sqlalchemy as sa

    from htd_pipelines.store.catalog import back_up

    t0 = time.perf_counter()
    with engine.begin() as conn:
        for tplan in reversed(rtype.tables):
            conn.execute(sa.delete(tplan.table).where(tplan.where_owned()), {"ids": ids})
        conn.execute(
            back_up.update()
            .where(back_up.c.id == backup_id)
            .values(is_reback=0, restored_at=None, restored_by=None, restore_run_id=None)
        )
    return time.perf_counter() - t0


def settle(url: str, rtype) -> float:  # noqa: ANN001
    """Untimed set-up before every timed run (PostgreSQL: VACUUM + CHECKPOINT)."""
    if common.dialect_of(url) != "postgresql":
        return 0.0
    from htd_pipelines.store.catalog import back_up

    return common.pg_settle(url, [t.table.fullname for t in rtype.tables] + [back_up.name])


def quiet_wait(timeout_s: float | None) -> dict | None:
    """Before a timed run: wait (up to `timeout_s`) until nothing else keeps the host busy."""
    if not timeout_s or timeout_s <= 0:
        return None
    return common.wait_for_quiet(timeout_s=timeout_s)


# ---------------------------------------------------------------------------- child


@contextmanager
def _null():
    yield None


class _Timer:
    """Accumulates the seconds spent in a wrapped function (phase instrumentation)."""

    def __init__(self, fn):  # noqa: ANN001
        self.fn = fn
        self.seconds = 0.0

    def __call__(self, *a, **kw):  # noqa: ANN002, ANN003, ANN204
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0


def _encode_s(conn, tplan, table) -> float | None:  # noqa: ANN001
    """Seconds to build the COPY payload of `table` the way postgresql.copy_in does, no sending:
    pgpq's binary encoding when it picks COPY (FORMAT binary) for the table, else Arrow CSV.

    None when postgresql.py no longer has these paths (the benchmark must not break on a rewrite).
    """
    from htd_pipelines.dialects import postgresql as load

    binary_types = getattr(load, "_binary_types", None)
    types = binary_types(conn, tplan, table.schema) if binary_types is not None else None
    if types is not None:
        encoder = load._binary_encoder(table.schema, types)
        t0 = time.perf_counter()
        for _ in load._binary_stream(encoder, table):
            pass
        return time.perf_counter() - t0
    csv_stream = getattr(load, "_csv_stream", None)
    if csv_stream is None:
        return None
    t0 = time.perf_counter()
    for _ in csv_stream(table):
        pass
    return time.perf_counter() - t0


def _copy_out_drain_s(conn, tplan, ids: list) -> float:  # noqa: ANN001
    """Seconds to receive the read-back's COPY (extraction SQL) TO STDOUT csv, not parsed."""
    sql = common.extraction_sql(conn.engine, tplan, ids)
    raw = conn.connection.driver_connection
    t0 = time.perf_counter()
    with raw.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        for _ in copy:
            pass
    return time.perf_counter() - t0


def measure_phases(engine, url: str, rtype, manifest, ids: list, repeat: int) -> dict:  # noqa: ANN001
    """Each phase of the restore timed on its own, on the same data (best of `repeat`)."""
    from htd_pipelines import restore
    from htd_pipelines.dialects import arrow_rows, postgresql, write
    from htd_pipelines.store.snapshots import SnapshotStore

    pg = engine.dialect.name == "postgresql"
    store = SnapshotStore(manifest.snapshot_uri)
    reps = []
    for _ in range(repeat):
        gc.collect()
        rep: dict = {"tables": {}}
        t0 = time.perf_counter()
        tables = restore.load_snapshot(store, manifest)
        rep["load_snapshot_s"] = time.perf_counter() - t0
        settle(url, rtype)
        seq_timer = None
        original_seq = getattr(postgresql, "advance_sequences", None)
        if original_seq is not None:
            seq_timer = postgresql.advance_sequences = _Timer(original_seq)
        try:
            sent: dict = {}
            with engine.connect() as conn:
                trans = conn.begin()
                for tplan in rtype.tables:  # parents first
                    data = tables[tplan.name]
                    before = seq_timer.seconds if seq_timer else 0.0
                    t0 = time.perf_counter()
                    sent[tplan.name] = write.insert_rows(conn, tplan, data)
                    ins = time.perf_counter() - t0
                    rep["tables"][tplan.name] = {
                        "rows": data.num_rows,
                        "insert_s": ins,
                        "sequences_s": (seq_timer.seconds - before) if seq_timer else None,
                    }
                for tplan in rtype.tables:
                    data = tables[tplan.name]
                    key = list(tplan.primary_key)
                    same = getattr(write, "same_as_sent", None)
                    was = sent.get(tplan.name)
                    if same is not None and was is not None:
                        # what restore_backup does first: the binary read-back, byte compare
                        t0 = time.perf_counter()
                        equal = same(conn, tplan, ids, was)
                        rep["tables"][tplan.name]["binary_compare_s"] = time.perf_counter() - t0
                        rep["tables"][tplan.name]["binary_equal"] = equal
                    t0 = time.perf_counter()
                    actual = write.read_rows(conn, tplan, ids)
                    t1 = time.perf_counter()
                    align = getattr(
                        arrow_rows, "align_by_key", None
                    )  # sorts only what is out of order
                    if align is not None:
                        expected, actual = align(data, actual, key)
                    else:
                        expected = arrow_rows.sort_by_key(data, key)
                        actual = arrow_rows.sort_by_key(actual, key)
                    t2 = time.perf_counter()
                    diffs = arrow_rows.differences(expected, actual, key, limit=10_000)
                    t3 = time.perf_counter()
                    if diffs:
                        raise SystemExit(f"read-back differs in {tplan.name}: {diffs[:3]}")
                    rep["tables"][tplan.name].update(
                        {"read_rows_s": t1 - t0, "sort_s": t2 - t1, "compare_s": t3 - t2}
                    )
                    del actual, expected
                if pg and write.use_copy(conn):
                    for tplan in rtype.tables:
                        rep["tables"][tplan.name]["copy_out_drain_s"] = _copy_out_drain_s(
                            conn, tplan, ids
                        )
                t0 = time.perf_counter()
                trans.rollback()
                rep["rollback_s"] = time.perf_counter() - t0
        finally:
            if original_seq is not None:
                postgresql.advance_sequences = original_seq
        if pg:
            with engine.connect() as conn:
                for tplan in rtype.tables:
                    rep["tables"][tplan.name]["csv_encode_s"] = _encode_s(
                        conn, tplan, tables[tplan.name]
                    )
        del tables
        reps.append(rep)

    def best(key: str) -> dict[str, float | None]:
        out = {}
        for name in reps[0]["tables"]:
            vals = [r["tables"][name].get(key) for r in reps]
            vals = [v for v in vals if v is not None]
            out[name] = min(vals) if vals else None
        return out

    per_key = [
        "insert_s",
        "sequences_s",
        "csv_encode_s",
        "read_rows_s",
        "copy_out_drain_s",
        "sort_s",
        "compare_s",
    ]
    per_table = {name: {"rows": reps[0]["tables"][name]["rows"]} for name in reps[0]["tables"]}
    for key in per_key:
        for name, v in best(key).items():
            per_table[name][key] = v
    for name, v in best("binary_compare_s").items():
        per_table[name]["binary_compare_s"] = v
        per_table[name]["binary_equal"] = all(r["tables"][name].get("binary_equal") for r in reps)
    for t in per_table.values():
        # what restore_backup's read-back costs: the byte compare where the bytes are equal,
        # else (or without it) the decoded read-back, align and compare
        decoded = sum(t.get(k) or 0.0 for k in ("read_rows_s", "sort_s", "compare_s"))
        t["verify_s"] = (t.get("binary_compare_s") or 0.0) + (
            0.0 if t.get("binary_equal") else decoded
        )
    per_key.append("verify_s")
    per_key.append("binary_compare_s")

    def total(key: str) -> float | None:
        vals = [t.get(key) for t in per_table.values()]
        if key == "binary_compare_s":
            vals = [v or 0.0 for v in vals]
        return None if any(v is None for v in vals) else sum(vals)

    return {
        "load_snapshot_s": min(r["load_snapshot_s"] for r in reps),
        "load_snapshot_all_s": [r["load_snapshot_s"] for r in reps],
        "rollback_s": min(r["rollback_s"] for r in reps),
        "totals": {key: total(key) for key in per_key},
        "per_table": per_table,
        "reps": reps,
    }


def child_main(args: argparse.Namespace) -> None:
    """restore_backup `repeat` times (reset in between), then the phases; figures as JSON."""
    t_import = time.perf_counter()
    from htd_pipelines import settings
    from htd_pipelines.backup import coerce_ids
    from htd_pipelines.dialects.engine import get_engine
    from htd_pipelines.registry.resolved import resolve_type
    from htd_pipelines.registry.spec import load_registry
    from htd_pipelines.restore import restore_backup
    from htd_pipelines.store import catalog

    import_s = time.perf_counter() - t_import
    rss_after_import = common.hwm_rss_mb() or common.peak_rss_mb()
    url = settings.database_url()
    engine = get_engine(url)
    registry = load_registry(settings.relations_file())
    rtype = resolve_type(engine, registry.get(TYPE_NAME))
    with engine.connect() as conn:
        record = catalog.get_backup(conn, args.backup_id)
    ids = coerce_ids(rtype, [record.relation_id])
    pg = engine.dialect.name == "postgresql"

    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")

    runs = []
    extra = 1 if profiler is not None else 0  # the profiled run comes last, untimed
    for i in range(args.repeat + extra):
        profiled = i == args.repeat
        gc.collect()
        settle_s = settle(url, rtype)
        quiet = quiet_wait(args.quiet_wait)
        rss_before = common.current_rss_mb()
        hwm_reset = common.reset_hwm_rss()
        if profiled:
            profiler.start()
        server0 = common.pg_backends_cpu_s(url) if pg else None
        host0, self0 = common.host_cpu_busy_s(), common.self_cpu_s()
        t0 = time.perf_counter()
        result = restore_backup(
            engine, registry, args.backup_id, uid="bench", run_id=f"bench-restore-{i}"
        )
        wall = time.perf_counter() - t0
        host1, self1 = common.host_cpu_busy_s(), common.self_cpu_s()
        server_cpu = common.cpu_delta_s(server0, common.pg_backends_cpu_s(url)) if pg else None
        if profiled:
            profiler.stop()
        runs.append(
            {
                "timed": not profiled,
                "profiled": profiled,
                "wall_s": wall,
                "rows": sum(result.rows.values()),
                "rows_per_table": result.rows,
                "corrected": result.corrected,
                "cpu_cores_restore": (self1 - self0) / wall,
                "cpu": {"client_s": self1 - self0, "server_s": server_cpu},
                "cpu_cores_host": (host1 - host0) / wall if host0 is not None else None,
                "rss_before_mb": rss_before,
                # this run's own peak when VmHWM could be reset, else the process's so far
                "peak_rss_mb": common.hwm_rss_mb() or common.peak_rss_mb(),
                "peak_rss_is_per_run": hwm_reset,
                "settle_s": settle_s,
                "quiet": quiet,
            }
        )
        del result
        runs[-1]["reset_s"] = reset_restore(engine, rtype, ids, args.backup_id)
    restore_peak = max(r["peak_rss_mb"] for r in runs if r["timed"])
    if profiler is not None:
        Path(args.profile).write_text(profiler.output_html())
        Path(args.profile).with_suffix(".txt").write_text(
            profiler.output_text(unicode=True, color=False, show_all=False)
        )

    phases = None
    if args.phases:
        gc.collect()
        phases = measure_phases(engine, url, rtype, record.manifest, ids, args.repeat)
    common.write_json(
        args.child_out,
        {
            "import_s": import_s,
            "rss_after_import_mb": rss_after_import,
            "peak_rss_restores_mb": restore_peak,
            "peak_rss_process_mb": common.hwm_rss_mb(),  # phases included
            "ru_maxrss_mb": common.peak_rss_mb(),  # inflated by the parent's RSS at spawn
            "runs": runs,
            "phases": phases,
        },
    )


# ---------------------------------------------------------------------------- reference: PG


def pg_export(url: str, engine, rtype, ids: list) -> dict[str, dict]:  # noqa: ANN001
    """Every session table's rows as COPY binary bytes, in memory (before the backup)."""
    prep = engine.dialect.identifier_preparer
    out = {}
    with common.psycopg_connect(url, autocommit=True) as conn, conn.cursor() as cur:
        for tplan in rtype.tables:
            sql = common.owned_rows_sql(engine, tplan, ids)
            buf = bytearray()
            with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)") as copy:
                for chunk in copy:
                    buf += chunk
            out[tplan.name] = {
                "table": prep.format_table(tplan.table),
                "columns": ", ".join(prep.quote(c.name) for c in tplan.columns),
                "rows": cur.rowcount,
                "data": bytes(buf),
            }
    return out


def pg_load_pass(url: str, exported: dict[str, dict]) -> tuple[float, dict[str, float], dict]:
    """COPY FROM STDIN (FORMAT binary) of every table, parents first, one transaction, ROLLBACK.

    Returns (seconds, seconds per table, CPU seconds of this process and of the server backend).
    """
    per_table = {}
    with common.psycopg_connect(url, autocommit=False) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")  # BEGIN, outside the timing
        pid = conn.info.backend_pid
        server0, client0 = common.proc_cpu_s(pid), common.self_cpu_s()
        t_all = time.perf_counter()
        for name, e in exported.items():
            t0 = time.perf_counter()
            view = memoryview(e["data"])
            with cur.copy(f"COPY {e['table']} ({e['columns']}) FROM STDIN (FORMAT binary)") as cp:
                for start in range(0, len(view), COPY_WRITE_BYTES):
                    cp.write(view[start : start + COPY_WRITE_BYTES])
            per_table[name] = time.perf_counter() - t0
            if cur.rowcount != e["rows"]:
                raise SystemExit(
                    f"reference COPY into {name}: {cur.rowcount} rows, not {e['rows']}"
                )
        seconds = time.perf_counter() - t_all
        server1, client1 = common.proc_cpu_s(pid), common.self_cpu_s()
        conn.rollback()
    cpu = {
        "client_s": client1 - client0,
        "server_s": server1 - server0 if server0 is not None and server1 is not None else None,
    }
    return seconds, per_table, cpu


# ---------------------------------------------------------------------------- reference: MariaDB


def _tsv_escape(b: bytes) -> bytes:
    if b"\\" in b:
        b = b.replace(b"\\", b"\\\\")
    for raw, esc in ((b"\t", b"\\t"), (b"\n", b"\\n"), (b"\x00", b"\\0"), (b"\r", b"\\r")):
        if raw in b:
            b = b.replace(raw, esc)
    return b


def _tsv_field(v) -> bytes:  # noqa: ANN001
    """One value in LOAD DATA's default format (what SELECT ... INTO OUTFILE writes)."""
    if v is None:
        return b"\\N"
    if isinstance(v, bytes | bytearray | memoryview):
        return _tsv_escape(bytes(v))
    if isinstance(v, str):
        return _tsv_escape(v.encode("utf-8"))
    if isinstance(v, bool):
        return b"1" if v else b"0"
    if isinstance(v, float):
        return repr(v).encode()
    if isinstance(v, dt.datetime):
        return v.isoformat(" ").encode()
    if isinstance(v, int | decimal.Decimal | dt.date | dt.time | dt.timedelta):
        return str(v).encode()
    return _tsv_escape(str(v).encode("utf-8"))


def mariadb_export(url: str, engine, rtype, ids: list, folder: Path) -> dict[str, dict]:  # noqa: ANN001
    """Every session table's rows as a LOAD DATA file (tab-separated, \\-escaped, \\N nulls)."""
    import pymysql.cursors

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    conn = common.pymysql_connect(url, cursorclass=pymysql.cursors.SSCursor)
    try:
        for tplan in rtype.tables:
            sql = common.owned_rows_sql(engine, tplan, ids)
            path = folder / f"{tplan.name}.tsv"
            rows = 0
            with conn.cursor() as cur, open(path, "wb") as f:
                cur.execute(sql)
                while batch := cur.fetchmany(10_000):
                    f.write(b"".join(b"\t".join(map(_tsv_field, r)) + b"\n" for r in batch))
                    rows += len(batch)
            out[tplan.name] = {
                "table": f"`{tplan.table.name}`",
                "columns": ", ".join(f"`{c.name}`" for c in tplan.columns),
                "rows": rows,
                "path": str(path),
                "bytes": path.stat().st_size,
            }
    finally:
        conn.close()
    return out


def mariadb_load_pass(url: str, exported: dict[str, dict]) -> tuple[float, dict[str, float], None]:
    """LOAD DATA LOCAL INFILE of every table, parents first, one transaction, then ROLLBACK."""
    per_table = {}
    conn = common.pymysql_connect(url, autocommit=False, local_infile=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            t_all = time.perf_counter()
            for name, e in exported.items():
                t0 = time.perf_counter()
                n = cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE {e['table']} CHARACTER SET binary "
                    f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                    f"({e['columns']})",
                    (e["path"],),
                )
                per_table[name] = time.perf_counter() - t0
                warnings = cur._result.warning_count if cur._result else 0
                if n != e["rows"] or warnings:
                    cur.execute("SHOW WARNINGS LIMIT 5")
                    raise SystemExit(
                        f"reference LOAD DATA into {name}: {n} rows (expected {e['rows']}), "
                        f"{warnings} warnings: {cur.fetchall()}"
                    )
            seconds = time.perf_counter() - t_all
        t0 = time.perf_counter()
        conn.rollback()
        rollback_s = time.perf_counter() - t0
    finally:
        conn.close()
    per_table["_rollback_s"] = rollback_s
    return seconds, per_table, None


# ---------------------------------------------------------------------------- parent


def measure_dialect(dialect: str, rows_requested: int, args: argparse.Namespace) -> dict:
    from htd_pipelines.delete import backup_sessions
    from htd_pipelines.dialects.engine import dispose_engines, get_engine
    from htd_pipelines.registry.spec import load_registry
    from htd_pipelines.store.snapshots import SnapshotStore

    out: dict = {"dialect": dialect, "rows_requested": rows_requested, "repeat": args.repeat}
    t_total = time.perf_counter()
    with common.scratch_database(dialect) as url, common.temp_workdir() as work:
        log(f"{dialect}: seeding {rows_requested:,} rows into {url.rsplit('/', 1)[-1]} ...")
        seeded = common.seed_session_any(url, rows_requested)
        out["seed_s"] = seeded.seconds
        out["session_id"] = seeded.session_id
        engine = get_engine(url)
        rtype = common.resolve_demo_type(engine, TYPE_NAME)
        ids = [seeded.session_id]

        log(f"{dialect}: exporting the session's rows for the reference ...")
        t0 = time.perf_counter()
        if dialect == "postgresql":
            exported = pg_export(url, engine, rtype, ids)
        else:
            exported = mariadb_export(url, engine, rtype, ids, work / "load_data")
        out["export_s"] = time.perf_counter() - t0
        ref_rows = sum(e["rows"] for e in exported.values())

        log(f"{dialect}: backup_sessions (source deleted) ...")
        env = common.htd_environment(url, work)
        store = SnapshotStore(env["HTD_SNAPSHOT_URI"])
        registry = load_registry(env["HTD_RELATIONS_FILE"])
        t0 = time.perf_counter()
        (recorded,) = backup_sessions(
            engine,
            registry,
            store,
            type_name=TYPE_NAME,
            relation_ids=[seeded.session_id],
            uid="bench",
            run_id="bench",
        )
        out["backup_s"] = time.perf_counter() - t0
        out["backup_id"] = recorded.backup_id
        out["parquet_bytes"] = recorded.bytes
        backup_rows = sum(recorded.rows.values())
        if backup_rows != ref_rows:
            raise SystemExit(f"row mismatch: backup {backup_rows:,} vs export {ref_rows:,}")

        log(f"{dialect}: reference {REFERENCE_NAME[dialect]}, best of {args.repeat} ...")
        passes, ref_quiet = [], []
        for _ in range(args.repeat):
            settle(url, rtype)
            ref_quiet.append(quiet_wait(args.quiet_wait))
            if dialect == "postgresql":
                passes.append(pg_load_pass(url, exported))
            else:
                passes.append(mariadb_load_pass(url, exported))
        best_s, best_tables, _ = min(passes, key=lambda p: p[0])
        out["reference"] = {
            "method": REFERENCE_NAME[dialect],
            "rows": ref_rows,
            "bytes": sum(len(e["data"]) if "data" in e else e["bytes"] for e in exported.values()),
            "best_s": best_s,
            "all_s": [p[0] for p in passes],
            "rows_per_s": ref_rows / best_s,
            "per_table_s": best_tables,
            "per_table_rows": {n: e["rows"] for n, e in exported.items()},
            "quiet": ref_quiet,
            "cpu_all": [p[2] for p in passes],
        }
        del exported, passes
        gc.collect()
        dispose_engines()

        log(f"{dialect}: restore_backup in a child process, best of {args.repeat} + phases ...")
        child_args = ["--child", "--backup-id", str(recorded.backup_id)]
        child_args += ["--repeat", str(args.repeat), "--quiet-wait", str(args.quiet_wait)]
        if not args.phases:
            child_args.append("--no-phases")
        if args.profile:
            prof = Path(args.profile).resolve()
            if args.dialect == "both":
                prof = prof.with_name(f"{prof.stem}.{dialect}{prof.suffix}")
            child_args += ["--profile", str(prof)]
            out["profile"] = str(prof)
        child = common.run_child(Path(__file__).resolve(), child_args, env)
        timed = [r for r in child["runs"] if r["timed"]]
        best_run = min(timed, key=lambda r: r["wall_s"])
        if best_run["rows"] != ref_rows:
            raise SystemExit(f"row mismatch: restore {best_run['rows']:,} vs {ref_rows:,}")
        out["restore"] = {
            "rows": best_run["rows"],
            "best_s": best_run["wall_s"],
            "all_s": [r["wall_s"] for r in timed],
            "rows_per_s": best_run["rows"] / best_run["wall_s"],
            "cpu_cores_restore_all": [r["cpu_cores_restore"] for r in timed],
            "cpu_cores_host_all": [r["cpu_cores_host"] for r in timed],
            "quiet": [r["quiet"] for r in timed],
            "cpu_all": [r["cpu"] for r in timed],
            "corrected": best_run["corrected"],
            "rss_before_best_mb": best_run["rss_before_mb"],
            "peak_rss_mb": child["peak_rss_restores_mb"],
            "peak_rss_first_run_mb": timed[0]["peak_rss_mb"],
            "peak_rss_child_all_mb": child["peak_rss_process_mb"],
            "child_ru_maxrss_mb": child["ru_maxrss_mb"],
            "rss_after_import_mb": child["rss_after_import_mb"],
            "import_s": child["import_s"],
            "runs": child["runs"],
        }
        out["phases"] = child["phases"]
    out["ratio"] = out["restore"]["rows_per_s"] / out["reference"]["rows_per_s"]
    ref_cpu = _best_cpu(out["reference"]["cpu_all"])
    res_cpu = _best_cpu(out["restore"]["cpu_all"])
    out["reference"]["cpu_best_s"], out["restore"]["cpu_best_s"] = ref_cpu, res_cpu
    out["ratio_cpu"] = ref_cpu / res_cpu if ref_cpu and res_cpu else None
    out["total_s"] = time.perf_counter() - t_total
    return out


def _best_cpu(cpus: list[dict | None]) -> float | None:
    """Smallest client + server CPU seconds over runs (None when the server's is unknown)."""
    totals = [c["client_s"] + c["server_s"] for c in cpus if c and c.get("server_s") is not None]
    return min(totals) if totals else None


def _fmt_s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def report(r: dict) -> bool:
    dialect = r["dialect"]
    ref, res = r["reference"], r["restore"]
    pg = dialect == "postgresql"
    rows = [
        Row("rows restored (all tables)", res["rows"]),
        Row(f"reference rows/s ({ref['method']})", ref["rows_per_s"]),
        Row("restore_backup rows/s", res["rows_per_s"]),
        Row(
            "ratio restore / reference",
            r["ratio"],
            "{:.2f}",
            f">= {TARGET_RATIO}" if pg else "",
            (lambda v: v >= TARGET_RATIO) if pg else None,
        ),
        Row("peak RSS of the restore process (MB)", res["peak_rss_mb"], "{:,.0f}"),
        Row("  info: peak RSS of the 1st restore (MB)", res["peak_rss_first_run_mb"], "{:,.0f}"),
        Row("  info: RSS after imports (MB)", res["rss_after_import_mb"], "{:,.0f}"),
        Row("  info: RSS before the best restore (MB)", res["rss_before_best_mb"], "{:,.0f}"),
        Row("  info: snapshot Parquet size (MB)", r["parquet_bytes"] / common.MB, "{:,.1f}"),
        Row("restore wall time, best (s)", res["best_s"], "{:,.2f}"),
        Row("reference load, best (s)", ref["best_s"], "{:,.2f}"),
    ]
    if r.get("ratio_cpu") is not None:
        rows += [
            Row("  info: restore CPU s, client + server (best)", res["cpu_best_s"], "{:,.2f}"),
            Row("  info: reference CPU s, client + server (best)", ref["cpu_best_s"], "{:,.2f}"),
            Row("  info: ratio by CPU time (noise-robust)", r["ratio_cpu"], "{:.2f}"),
        ]
    ok = common.print_table(
        f"\nrestore benchmark: {res['rows']:,} rows, {dialect}, best of {r['repeat']}", rows
    )
    ph = r.get("phases")
    if ph:
        tot = ph["totals"]
        best = res["best_s"]
        lines: list[tuple[str, float | None]] = [
            ("load_snapshot (read, sha256, Parquet decode)", ph["load_snapshot_s"]),
            ("insert_rows (all tables)", tot["insert_s"]),
        ]
        if tot.get("csv_encode_s") is not None:
            lines.append(("  encode (pgpq binary / Arrow CSV, no DB)", tot["csv_encode_s"]))
            if tot.get("sequences_s") is not None:
                lines.append(
                    (
                        "  COPY send + server",
                        tot["insert_s"] - tot["csv_encode_s"] - tot["sequences_s"],
                    )
                )
        if pg and tot.get("sequences_s") is not None:
            lines.append(("  advance sequences", tot["sequences_s"]))
        lines.append(("read-back as restore_backup does it", tot["verify_s"]))
        if tot.get("binary_compare_s"):
            equal = sum(1 for t in ph["per_table"].values() if t.get("binary_equal"))
            lines.append(
                (
                    f"  binary COPY out, byte compare ({equal}/{len(ph['per_table'])} equal)",
                    tot["binary_compare_s"],
                )
            )
        lines.append(("info: decoded read-back (the fallback): read_rows", tot["read_rows_s"]))
        if tot.get("copy_out_drain_s") is not None:
            lines.append(("  COPY TO STDOUT csv, received only", tot["copy_out_drain_s"]))
            lines.append(("  CSV parse + cast", tot["read_rows_s"] - tot["copy_out_drain_s"]))
        lines += [
            ("  align/sort by key (snapshot + read-back)", tot["sort_s"]),
            ("  differences (compare)", tot["compare_s"]),
        ]
        top = [ph["load_snapshot_s"], tot["insert_s"], tot["verify_s"]]
        phase_sum = sum(v for v in top if v is not None)
        lines += [
            ("sum of the phases", phase_sum),
            ("restore best - sum (prepare, claim, commit, noise)", best - phase_sum),
            ("  info: ROLLBACK of the phase transaction", ph["rollback_s"]),
        ]
        print(f"\nphases (each best of {r['repeat']}, same data)        seconds  % of restore")
        for label, v in lines:
            pct = f"{100 * v / best:9.0f}%" if v is not None else ""
            print(f"  {label:<50} {_fmt_s(v):>8} {pct}")

        print(
            "\nper table              rows  reference s   insert s  ref/insert  read-back s"
            "  sort+cmp s"
        )
        for name, t in ph["per_table"].items():
            ref_s = ref["per_table_s"].get(name)
            ins = t["insert_s"]
            ratio = f"{ref_s / ins:10.2f}" if ref_s and ins else "       n/a"
            sc = (t["sort_s"] or 0) + (t["compare_s"] or 0)
            print(
                f"  {name:<19} {t['rows']:>9,} {_fmt_s(ref_s):>12} {_fmt_s(ins):>10} {ratio}"
                f" {_fmt_s(t['read_rows_s']):>12} {sc:11.3f}"
            )
    print(
        f"  runs: restore {', '.join(f'{s:.2f}' for s in res['all_s'])} s; reference "
        f"{', '.join(f'{s:.2f}' for s in ref['all_s'])} s; seed {r['seed_s']:.1f} s; "
        f"backup {r['backup_s']:.1f} s; total {r['total_s']:.1f} s"
    )
    if all(v is not None for v in res["cpu_cores_host_all"]):
        print(
            f"  CPU during timed restores (cores busy, {os.cpu_count()} available): host "
            f"{', '.join(f'{v:.2f}' for v in res['cpu_cores_host_all'])}; restore process "
            f"{', '.join(f'{v:.2f}' for v in res['cpu_cores_restore_all'])} "
            "(host - restore = database server + anything else running)"
        )
    common.print_quiet([q for q in ref.get("quiet", []) + res.get("quiet", []) if q])
    if res["corrected"]:
        print(f"  note: restore corrected cells after insert: {res['corrected']}")
    if r.get("profile"):
        print(f"  profile of one extra restore: {r['profile']} (+ .txt)")
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.dialect_parser(__doc__)
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is kept)")
    p.add_argument(
        "--no-phases", dest="phases", action="store_false", help="skip the phase breakdown"
    )
    p.add_argument(
        "--profile",
        metavar="HTML",
        help="pyinstrument-profile one extra, untimed restore (writes HTML and .txt)",
    )
    # internal: the child process entry point
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--backup-id", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    return common.run_dialects(args, DEFAULT_ROWS, measure_dialect, report)


if __name__ == "__main__":
    sys.exit(main())
