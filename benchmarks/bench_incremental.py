"""Incremental-version benchmark: size and time of an incremental version against a full one.

    .venv/bin/python benchmarks/bench_incremental.py [--rows N] [--changed 0.01]
                                                     [--dialect postgresql|mariadb|both]
                                                     [--json out.json] [--strict]

Per dialect, all in the same run, everything in this process (``htd_pipelines.versions``
called directly, no Dagster):

1. A scratch database gets the demo schema and one session of ``--rows`` rows
   (``seed_large_session``), then ANALYZE; it is dropped at the end whatever happens. Untimed
   warm-up: every table of the session read once, its first rows written and read as Parquet.
2. Version 1: ``protective_backup`` of the session. It has no version yet, so this is a **full**
   version (the backup path, source kept). Bytes = the manifest's Parquet bytes (the sum of
   the table files' sizes, manifest.json aside), wall time, rows/s.
3. ``protective_backup`` again, nothing changed: "unchanged", no new version. A full version
   records no change marks, so this check rebuilds version 1 and diffs every table.
4. ``--changed`` (default 1%) of the session's rows are changed, spread over the session tables
   in proportion to their size, in one transaction: per table ``changed/2`` of its rows get a
   non-key column rewritten (``"edited <id>"``, a value they never had), ``changed/4`` are
   deleted and ``changed/4`` are added (copies of surviving rows under new primary keys).
   Foreign keys stay valid: the task logs of a deleted task are deleted with it (they count
   toward task_log's deletions), a task whose node is deleted gets ``node_id = NULL`` (it counts
   toward session_task's changes). The root row (process_session) is left alone.
5. Version 2: ``protective_backup`` again: an **incremental** version on top of version 1 (the
   added and changed rows whole, the deleted keys). Its added / changed / deleted counts per
   table (from its manifest) must equal the changes made in step 4 exactly.
6. ``protective_backup`` once more, nothing changed: "unchanged" again, this time by the row
   digests version 2 recorded (the nightly cost of a session that did not change).
7. ``compose_version`` of version 2 (full + incremental), timed, then compared value for value
   with the session's rows in the database, table by table.
8. A table with PASS/FAIL: incremental bytes / full bytes <= 0.05 (only with ``--changed
   0.01``), the counts of step 5, the comparison of step 7; per table rows, changes and bytes;
   for steps 3, 5 and 6 where the time goes (the functions of ``versions.protective`` doing it,
   wrapped with timers). Also the fixed overhead of the incremental's files: Parquet files of
   the same schemas and no rows, written the same way. ``--json PATH`` writes every figure.

Change detection: only the row-digest mode is measured by default. On the demo schema the
change-tracking column (``updated_at``) exists on the 1-row root table only, and the first
incremental on top of a full version reads every table whatever the mode (a full version
records no change marks). ``--change-column updated_at`` passes it through anyway.

Each step runs once (versions are state: a repetition would measure something else). PostgreSQL
steps start after ``VACUUM`` of the tables and a ``CHECKPOINT`` (untimed); at 100,000 rows and
more each step first waits (up to ``--quiet-wait`` s, default 60) for an idle host.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Row, log  # noqa: E402

TYPE_NAME = "inst"
TARGET_RATIO = 0.05  # incremental bytes <= 0.05 x full bytes...
TARGET_CHANGED = 0.01  # ...for 1% of the rows changed (other --changed: no verdict)
DEFAULT_ROWS = {"postgresql": 1_000_000, "mariadb": 200_000}
SEED = 20240601
CHUNK = 1_000  # ids per IN (...) list

# the non-key column each session table gets rewritten ("edited <id>": never a seeded value)
UPDATE_COLUMNS = {
    "session_node": "name",
    "session_task": "title",
    "task_log": "message",
    "form_data": "form_key",
    "session_comment": "content",
    "attachment": "file_name",
    "data_table_row": "table_key",
    "session_operate_log": "detail",
}

# versions/protective.py functions timed during the incremental runs (module globals, so patchable)
PHASES = {
    "read_current": "read the session's rows (extract path)",
    "probe": "probe keys + change column",
    "row_digest": "row digests (compare + new marks)",
    "compose": "rebuild the base version (read Parquet)",
    "diff_table": "diff by primary key",
    "apply_changes": "rebuild check: apply the diff",
    "differences": "rebuild check: compare",
    "_write": "write the Parquet files",
}


# ---------------------------------------------------------------------------- instrumentation


class _Timer:
    """Accumulates the seconds spent in a wrapped function and counts the calls."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *a, **kw):
        t0 = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


@contextmanager
def phase_timers():
    """Patch PHASES in htd_pipelines.versions.protective with timers; yields {name: _Timer}."""
    from htd_pipelines.versions import protective

    timers = {}
    for name in PHASES:
        original = getattr(protective, name, None)
        if original is not None:
            timers[name] = _Timer(original)
            setattr(protective, name, timers[name])
    try:
        yield timers
    finally:
        for name, timer in timers.items():
            setattr(protective, name, timer.fn)


def settle(url: str, rtype) -> float:
    """Untimed set-up before every timed step (PostgreSQL: VACUUM + CHECKPOINT)."""
    if common.dialect_of(url) != "postgresql":
        return 0.0
    from htd_pipelines.store.catalog import back_up

    return common.pg_settle(url, [t.table.fullname for t in rtype.tables] + [back_up.name])


def timed_step(url: str, rtype, quiet_wait_s: float, fn: Callable, *, phases: bool = False):
    """fn() after settle + quiet wait: (result, figures: wall s, peak RSS, CPU, phases)."""
    gc.collect()
    settle(url, rtype)
    quiet = common.wait_for_quiet(timeout_s=quiet_wait_s) if quiet_wait_s > 0 else None
    hwm_reset = common.reset_hwm_rss()
    rss_before = common.current_rss_mb()
    host0, self0 = common.host_cpu_busy_s(), common.self_cpu_s()
    with phase_timers() if phases else _null() as timers:
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
    host1, self1 = common.host_cpu_busy_s(), common.self_cpu_s()
    figures = {
        "wall_s": wall,
        "cpu_cores_self": (self1 - self0) / wall if wall else None,
        "cpu_cores_host": (host1 - host0) / wall if wall and host0 is not None else None,
        "rss_before_mb": rss_before,
        "peak_rss_mb": common.hwm_rss_mb() if hwm_reset else None,
        "quiet": quiet,
    }
    if timers is not None:
        figures["phases"] = {n: {"s": t.seconds, "calls": t.calls} for n, t in timers.items()}
    return result, figures


@contextmanager
def _null():
    yield None


# ---------------------------------------------------------------------------- the changes


def _chunks(values: list, size: int = CHUNK):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _owned(table, sid: int):
    """Predicate: rows of a demo session table owned by session `sid`."""
    import sqlalchemy as sa

    from htd_pipelines.demo import schema as demo

    if table.name == "task_log":
        tasks = demo.session_task
        return table.c.task_id.in_(sa.select(tasks.c.id).where(tasks.c.sess_id == sid))
    return table.c.sess_id == sid


def _sample(rng: random.Random, population, k: int) -> list:
    population = sorted(population)
    return sorted(rng.sample(population, max(0, min(k, len(population)))))


def change_session(engine, sid: int, fraction: float, *, seed: int = SEED) -> dict:
    """Change `fraction` of the session's rows (1/2 updated, 1/4 deleted, 1/4 added), one
    transaction; returns what was done per table: {"added", "changed", "deleted"} and counts."""
    import sqlalchemy as sa

    from htd_pipelines.demo import schema as demo

    rng = random.Random(seed)
    tables = {name: getattr(demo, name) for name in demo.SESSION_TABLES}
    t0 = time.perf_counter()
    with engine.begin() as conn:
        rows: dict[str, dict[int, int | None]] = {}  # id -> parent id (node / task) or None
        for name, table in tables.items():
            parent = {"session_task": "node_id", "task_log": "task_id"}.get(name)
            cols = [table.c.id, table.c[parent] if parent else sa.null()]
            rows[name] = dict(conn.execute(sa.select(*cols).where(_owned(table, sid))).all())
        before = {n: len(r) for n, r in rows.items()}

        def quota(name: str, share: float) -> int:
            return round(before[name] * fraction * share)

        # deletions: nodes, tasks (with their logs), then the leaves
        deleted = {n: _sample(rng, r, quota(n, 0.25)) for n, r in rows.items()}
        gone_nodes, gone_tasks = set(deleted["session_node"]), set(deleted["session_task"])
        cascaded = sorted(i for i, task in rows["task_log"].items() if task in gone_tasks)
        rest = set(rows["task_log"]) - set(cascaded)
        extra = _sample(rng, rest, quota("task_log", 0.25) - len(cascaded))
        deleted["task_log"] = sorted(cascaded + extra)
        orphaned = sorted(
            i
            for i, node in rows["session_task"].items()
            if node in gone_nodes and i not in gone_tasks
        )
        # updates: rows not deleted (a task losing its node is already a change)
        changed: dict[str, list[int]] = {}
        for name, r in rows.items():
            pool = set(r) - set(deleted[name])
            if name == "session_task":
                pool -= set(orphaned)
                picked = _sample(rng, pool, quota(name, 0.5) - len(orphaned))
                changed[name] = sorted(orphaned + picked)
                updated = picked
            else:
                changed[name] = updated = _sample(rng, pool, quota(name, 0.5))
            if name == "session_task" and orphaned:
                for ids in _chunks(orphaned):
                    conn.execute(
                        sa.update(tables[name])
                        .where(tables[name].c.id.in_(ids))
                        .values(node_id=None)
                    )
            if updated:
                table, col = tables[name], UPDATE_COLUMNS[name]
                stmt = (
                    sa.update(table)
                    .where(table.c.id == sa.bindparam("_id"))
                    .values({col: sa.bindparam("_value")})
                )
                conn.execute(stmt, [{"_id": i, "_value": f"edited {i}"} for i in updated])
        for name in reversed(demo.SESSION_TABLES):  # children first
            for ids in _chunks(deleted[name]):
                conn.execute(sa.delete(tables[name]).where(tables[name].c.id.in_(ids)))
        # additions: copies of surviving rows (edited or not) under new primary keys
        added: dict[str, int] = {}
        for name in demo.SESSION_TABLES:  # parents first
            table = tables[name]
            survivors = set(rows[name]) - set(deleted[name])
            source = _sample(rng, survivors, quota(name, 0.25))
            body = [c for c in table.columns if c.name != "id"]
            copies = []
            for ids in _chunks(source):
                found = conn.execute(
                    sa.select(*body).where(table.c.id.in_(ids)).order_by(table.c.id)
                )
                copies += [dict(r._mapping) for r in found]
            if copies:
                conn.execute(table.insert(), copies)
            added[name] = len(copies)
    seconds = time.perf_counter() - t0
    out = {
        name: {"added": added[name], "changed": len(changed[name]), "deleted": len(deleted[name])}
        for name in demo.SESSION_TABLES
    }
    return {
        "seconds": seconds,
        "rows_before": before,
        "per_table": out,
        "orphaned_tasks": len(orphaned),
        "cascaded_logs": len(cascaded),
        "added": sum(v["added"] for v in out.values()),
        "changed": sum(v["changed"] for v in out.values()),
        "deleted": sum(v["deleted"] for v in out.values()),
    }


# ---------------------------------------------------------------------------- checks


def compare_with_live(engine, rtype, ids: list, composed: dict) -> dict:
    """compose()'s tables against the session's rows now, value for value, per table."""
    from htd_pipelines.dialects.arrow_rows import differences, sort_by_key
    from htd_pipelines.versions import diff

    out = {}
    for tplan in rtype.tables:
        key, schema = list(tplan.primary_key), tplan.arrow_schema()
        live = sort_by_key(diff.conform(diff.read_current(engine, tplan, ids), schema), key)
        got = sort_by_key(diff.conform(composed[tplan.name], schema), key)
        off = differences(live, got, key, limit=3)
        out[tplan.name] = {
            "live_rows": live.num_rows,
            "composed_rows": got.num_rows,
            "same": not off,
            "first_differences": [repr(d) for d in off],
        }
    return out


def warm_up(engine, rtype, ids: list, store) -> int:
    """Untimed: every table read (database cache, extract path), its first rows written as
    zstd Parquet and read back in memory (first-use costs of the Parquet code). Returns rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from htd_pipelines.versions import diff

    rows = 0
    for tplan in rtype.tables:
        table = diff.read_current(engine, tplan, ids)
        rows += table.num_rows
        sink = pa.BufferOutputStream()
        pq.write_table(table.slice(0, 10_000), sink, compression="zstd")
        pq.read_table(pa.BufferReader(sink.getvalue()))
    return rows


def empty_file_bytes(store, rtype, manifest) -> dict[str, int]:
    """Per file of an incremental version: the size of a Parquet file with the same schema and
    no rows, written the same way (zstd, the store's encryption): its fixed overhead, at least."""
    out = {}
    folder = f"bench_overhead/v{manifest.version}"
    store.fs.create_dir(store.full(folder), recursive=True)
    for t in manifest.tables:
        schema = rtype.table(t.table).arrow_schema().remove_metadata()
        files = [(t.file, schema)]
        if t.deleted_file:
            files.append((t.deleted_file, pa_select(schema, list(t.primary_key))))
        for name, sch in files:
            out[name] = store.parquet_writer(f"{folder}/{name}", sch).close().size
    return out


def pa_select(schema, names: list[str]):
    import pyarrow as pa

    return pa.schema([schema.field(n) for n in names])


def manifest_size(store, location: str) -> int | None:
    from htd_pipelines.store.manifest import MANIFEST_FILE

    try:
        return store.fs.get_file_info(store.full(f"{location}/{MANIFEST_FILE}")).size
    except OSError:
        return None


# ---------------------------------------------------------------------------- parent


def measure_dialect(dialect: str, rows_requested: int, args: argparse.Namespace) -> dict:
    from htd_pipelines.dialects.engine import dispose_engines, get_engine
    from htd_pipelines.registry.spec import load_registry
    from htd_pipelines.store import catalog
    from htd_pipelines.store.snapshots import SnapshotStore
    from htd_pipelines.versions import chain, protective

    out: dict = {
        "dialect": dialect,
        "rows_requested": rows_requested,
        "changed_fraction": args.changed,
        "change_column": args.change_column,
    }
    t_total = time.perf_counter()
    with common.scratch_database(dialect) as url, common.temp_workdir() as work:
        log(f"{dialect}: seeding {rows_requested:,} rows into {url.rsplit('/', 1)[-1]} ...")
        seeded = common.seed_session_any(url, rows_requested)
        out["seed_s"] = seeded.seconds
        sid = seeded.session_id
        out["session_id"] = sid
        engine = get_engine(url)
        rtype = common.resolve_demo_type(engine, TYPE_NAME)
        ids = [sid]
        env = common.htd_environment(url, work)
        store = SnapshotStore(env["HTD_SNAPSHOT_URI"])
        registry = load_registry(env["HTD_RELATIONS_FILE"])
        out["store"] = {"zstd_level": store.zstd_level, "encrypt_key_id": store.encrypt_key_id}
        catalog.ensure_catalog(engine)  # untimed, like the seeding
        wait = args.quiet_wait

        def protect(run_id: str):
            [outcome] = protective.protective_backup(
                engine,
                registry,
                store,
                type_name=TYPE_NAME,
                relation_ids=[sid],
                uid="bench",
                run_id=run_id,
                change_column=args.change_column,
            )
            if outcome.status == "failed":
                raise SystemExit(f"protective_backup {run_id} failed: {outcome.reason}")
            return outcome

        log(f"{dialect}: warm-up: the session's rows read, some written and read as Parquet ...")
        t0 = time.perf_counter()
        warm_rows = warm_up(engine, rtype, ids, store)
        out["warmup_s"] = time.perf_counter() - t0
        out["rows_v1"] = warm_rows

        log(f"{dialect}: version 1 (full) ...")
        full, fig = timed_step(url, rtype, wait, lambda: protect("bench-v1"))
        if full.status != "full" or sum(full.rows.values()) != warm_rows:
            raise SystemExit(f"version 1: {full.status}, {sum(full.rows.values())} rows")
        out["full"] = {
            **fig,
            "version": full.version,
            "rows": warm_rows,
            "rows_per_s": warm_rows / fig["wall_s"],
            "bytes": full.bytes,
            "manifest_bytes": manifest_size(store, full.location),
            "rows_per_table": full.rows,
        }

        log(f"{dialect}: nothing changed yet: protective_backup on top of the full version ...")
        same, fig = timed_step(url, rtype, wait, lambda: protect("bench-check-v1"), phases=True)
        out["unchanged_after_full"] = {**fig, "status": same.status, "version": same.version}
        if same.status != "unchanged":
            raise SystemExit(f"the unchanged session got a new version: {same.status}")

        log(f"{dialect}: changing {args.changed:.2%} of the rows ...")
        made = change_session(engine, sid, args.changed)
        out["changes"] = made
        rows_v2 = warm_rows + made["added"] - made["deleted"]
        out["rows_v2"] = rows_v2

        log(f"{dialect}: version 2 (incremental) ...")
        inc, fig = timed_step(url, rtype, wait, lambda: protect("bench-v2"), phases=True)
        if inc.status != "incremental":
            raise SystemExit(f"version 2 is {inc.status} ({inc.reason}), not incremental")
        out["incremental"] = {
            **fig,
            "version": inc.version,
            "base_version": inc.base_version,
            "rows_compared": rows_v2,
            "rows_per_s": rows_v2 / fig["wall_s"],
            "bytes": inc.bytes,
            "full_bytes": inc.full_bytes,
            "manifest_bytes": manifest_size(store, inc.location),
            "added": inc.added,
            "changed": inc.changed,
            "deleted": inc.deleted,
            "rows_stored": inc.rows,
        }
        counts_off = {}
        for name, want in made["per_table"].items():
            got = {
                "added": inc.added.get(name, 0),
                "changed": inc.changed.get(name, 0),
                "deleted": inc.deleted.get(name, 0),
            }
            if got != want:
                counts_off[name] = {"made": want, "manifest": got}
        extra = set(inc.added) | set(inc.changed) | set(inc.deleted)
        for name in extra - set(made["per_table"]):
            counts_off[name] = {"made": None, "manifest": "changed"}
        out["counts_off"] = counts_off

        log(f"{dialect}: nothing changed: protective_backup on top of the incremental ...")
        same, fig = timed_step(url, rtype, wait, lambda: protect("bench-check-v2"), phases=True)
        out["unchanged"] = {**fig, "status": same.status, "version": same.version}
        if same.status != "unchanged":
            raise SystemExit(f"the unchanged session got a new version: {same.status}")

        log(f"{dialect}: compose_version(2) and compare with the database ...")
        composed, fig = timed_step(
            url,
            rtype,
            wait,
            lambda: chain.compose_version(engine, TYPE_NAME, sid, inc.version, store),
        )
        composed_rows = sum(t.num_rows for t in composed.values())
        t0 = time.perf_counter()
        per_table = compare_with_live(engine, rtype, ids, composed)
        out["compose"] = {
            **fig,
            "rows": composed_rows,
            "rows_per_s": composed_rows / fig["wall_s"],
            "compare_s": time.perf_counter() - t0,
            "per_table": per_table,
            "tables_differing": sorted(n for n, t in per_table.items() if not t["same"]),
        }
        del composed
        out["versions"] = chain.list_versions(engine, TYPE_NAME, sid)
        with engine.connect() as conn:
            records = catalog.find_backups(conn, type_name=TYPE_NAME, relation_id=str(sid))
        manifests = {r.version: r.manifest for r in records}
        full_m, inc_m = manifests[full.version], manifests[inc.version]
        out["per_table"] = {
            t.table: {
                "rows_v1": t.rows,
                "full_bytes": t.bytes,
                "inc_rows": 0,
                "inc_bytes": 0,
                "inc_deleted_bytes": 0,
            }
            for t in full_m.tables
        }
        for t in inc_m.tables:
            out["per_table"][t.table].update(
                {"inc_rows": t.rows, "inc_bytes": t.bytes, "inc_deleted_bytes": t.deleted_bytes}
            )
        out["incremental"]["files"] = len(inc_m.tables) + sum(
            1 for t in inc_m.tables if t.deleted_file
        )
        out["full"]["files"] = len(full_m.tables)
        overhead = empty_file_bytes(store, rtype, inc_m)
        out["incremental"]["empty_file_bytes"] = overhead
        out["incremental"]["overhead_bytes"] = sum(overhead.values())
        out["incremental"]["upsert_bytes"] = sum(t.bytes for t in inc_m.tables)
        out["incremental"]["upsert_overhead_bytes"] = sum(overhead[t.file] for t in inc_m.tables)
        out["full"]["overhead_bytes"] = sum(empty_file_bytes(store, rtype, full_m).values())
        engine.dispose()
        dispose_engines()
    out["ratio"] = out["incremental"]["bytes"] / out["full"]["bytes"]
    out["total_s"] = time.perf_counter() - t_total
    return out


def report(r: dict) -> bool:
    full, inc, made = r["full"], r["incremental"], r["changes"]
    same, comp = r["unchanged"], r["compose"]
    n_changed = made["added"] + made["changed"] + made["deleted"]
    with_manifests = (inc["bytes"] + (inc["manifest_bytes"] or 0)) / (
        full["bytes"] + (full["manifest_bytes"] or 0)
    )
    data_ratio = (inc["bytes"] - inc["overhead_bytes"]) / (full["bytes"] - full["overhead_bytes"])
    stored = sum(inc["added"].values()) + sum(inc["changed"].values())
    full_row = (full["bytes"] - full["overhead_bytes"]) / full["rows"]
    inc_row = (inc["upsert_bytes"] - inc["upsert_overhead_bytes"]) / stored if stored else None
    per_row = f"{full_row:,.1f} / " + ("n/a" if inc_row is None else f"{inc_row:,.1f}")
    targeted = abs(r["changed_fraction"] - TARGET_CHANGED) < 1e-9  # the target is for 1%
    rows = [
        Row("session rows (version 1)", r["rows_v1"]),
        Row(
            "rows changed: added + changed + deleted",
            f"{made['added']:,} + {made['changed']:,} + {made['deleted']:,} = {n_changed:,}",
        ),
        Row("  info: share of the session's rows", n_changed / r["rows_v1"], "{:.2%}"),
        Row(
            "manifest counts vs changes made: tables off",
            len(r["counts_off"]),
            "{:,.0f}",
            "0",
            lambda v: v == 0,
        ),
        Row("full version: Parquet bytes", full["bytes"], "{:,.0f}"),
        Row("incremental version: Parquet bytes", inc["bytes"], "{:,.0f}"),
        Row(
            "ratio incremental / full",
            r["ratio"],
            "{:.4f}",
            f"<= {TARGET_RATIO}" if targeted else f"(<= {TARGET_RATIO} at 1%)",
            (lambda v: v <= TARGET_RATIO) if targeted else None,
        ),
        Row("  info: ratio with manifest.json on both sides", with_manifests, "{:.4f}"),
        Row(
            "  info: fixed overhead: empty files of the same schemas",
            inc["overhead_bytes"],
            "{:,.0f}",
        ),
        Row("  info: ratio without the fixed overhead (both sides)", data_ratio, "{:.4f}"),
        Row("  info: bytes per stored row, overhead aside: full / inc.", per_row),
        Row("  info: manifest.json full / incremental (KB)", _kb_pair(full, inc)),
        Row("  info: files full / incremental", f"{full['files']} / {inc['files']}"),
        Row("full version: wall time (s)", full["wall_s"], "{:,.2f}"),
        Row("  info: full version rows/s", full["rows_per_s"]),
        Row("incremental version: wall time (s)", inc["wall_s"], "{:,.2f}"),
        Row("  info: incremental rows compared/s", inc["rows_per_s"]),
        Row("  info: time incremental / full", inc["wall_s"] / full["wall_s"], "{:.2f}"),
        Row(
            "unchanged check on the full version (s)",
            r["unchanged_after_full"]["wall_s"],
            "{:,.2f}",
        ),
        Row("unchanged check on the incremental (s)", same["wall_s"], "{:,.2f}"),
        Row("compose_version(2): wall time (s)", comp["wall_s"], "{:,.2f}"),
        Row(
            "compose(2) vs database: tables differing",
            len(comp["tables_differing"]),
            "{:,.0f}",
            "0",
            lambda v: v == 0,
        ),
        Row("peak RSS, full version (MB; growth in the step)", _rss(full)),
        Row("peak RSS, incremental version (MB)", _rss(inc)),
        Row("  info: peak RSS, check on v1 / on v2 (MB)", _rss(r["unchanged_after_full"], same)),
        Row("  info: peak RSS, compose_version(2) (MB)", _rss(comp)),
    ]
    ok = common.print_table(
        f"\nincremental benchmark: {r['rows_v1']:,} rows, {r['dialect']}, "
        f"{r['changed_fraction']:.2%} changed",
        rows,
    )
    print(
        "\nper table              rows v1   added changed deleted   full bytes    inc bytes"
        "  (deleted keys)"
    )
    for name, t in r["per_table"].items():
        c = made["per_table"].get(name, {"added": 0, "changed": 0, "deleted": 0})
        inc_bytes = t["inc_bytes"] + t["inc_deleted_bytes"]
        print(
            f"  {name:<20} {t['rows_v1']:>9,} {c['added']:>7,} {c['changed']:>7,} "
            f"{c['deleted']:>7,} {t['full_bytes']:>12,} {inc_bytes:>12,}"
            f"  ({t['inc_deleted_bytes']:,})"
        )
    print(
        f"  FK upkeep: {made['cascaded_logs']:,} task logs deleted with their tasks, "
        f"{made['orphaned_tasks']:,} tasks lost their node (node_id NULL)"
    )
    breakdowns = (
        ("unchanged check on top of the full version 1", r["unchanged_after_full"]),
        ("incremental version 2", inc),
        ("unchanged check on top of the incremental version 2", same),
    )
    for label, fig in breakdowns:
        ph = fig.get("phases") or {}
        print(f"\n{label}: where the {fig['wall_s']:.2f} s go")
        covered = 0.0
        for name, desc in PHASES.items():
            p = ph.get(name)
            if not p or not p["calls"]:
                continue
            covered += p["s"]
            share = 100 * p["s"] / fig["wall_s"]
            print(f"  {desc:<42} {p['s']:8.3f} s {share:5.0f}%  ({p['calls']} calls)")
        rest = fig["wall_s"] - covered
        share = 100 * rest / fig["wall_s"]
        print(f"  {'the rest (catalog, manifest, plan, ...)':<42} {rest:8.3f} s {share:5.0f}%")
    if r["counts_off"]:
        print(f"\n  counts off: {r['counts_off']}")
    if comp["tables_differing"]:
        for name in comp["tables_differing"]:
            print(f"  compose(2) differs in {name}: {comp['per_table'][name]}")
    print(
        f"\n  seed {r['seed_s']:.1f} s; changes {made['seconds']:.2f} s; compare with the "
        f"database {comp['compare_s']:.2f} s; total {r['total_s']:.1f} s"
    )
    steps = (
        ("full", full),
        ("check on v1", r["unchanged_after_full"]),
        ("incremental", inc),
        ("check on v2", same),
        ("compose", comp),
    )
    if all(f["cpu_cores_host"] is not None for _, f in steps):
        print(
            f"  CPU (cores busy, {os.cpu_count()} available), host / this process: "
            + "; ".join(
                f"{n} {f['cpu_cores_host']:.2f} / {f['cpu_cores_self']:.2f}" for n, f in steps
            )
            + " (host - process = database server + anything else running)"
        )
    common.print_quiet([f["quiet"] for _, f in steps if f["quiet"]], runs="steps")
    return ok


def _kb_pair(full: dict, inc: dict) -> str:
    def kb(v: int | None) -> str:
        return "n/a" if v is None else f"{v / 1024:,.1f}"

    return f"{kb(full['manifest_bytes'])} / {kb(inc['manifest_bytes'])}"


def _rss(*figs: dict) -> str:
    """Peak RSS of the step(s), with the growth over the RSS at the step's start."""
    return " / ".join(
        "n/a"
        if f["peak_rss_mb"] is None
        else f"{f['peak_rss_mb']:,.0f} ({f['peak_rss_mb'] - f['rss_before_mb']:+,.0f})"
        for f in figs
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.dialect_parser(__doc__, runs="step")
    p.add_argument(
        "--changed",
        type=float,
        default=0.01,
        help="fraction of the session's rows to change between the versions (default 0.01)",
    )
    p.add_argument(
        "--change-column",
        metavar="COL",
        help="change-tracking column for protective_backup (default: none, row digests)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0 < args.changed <= 1:
        raise SystemExit("--changed must be in (0, 1]")
    return common.run_dialects(args, DEFAULT_ROWS, measure_dialect, report)


if __name__ == "__main__":
    sys.exit(main())
