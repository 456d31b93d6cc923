"""Backup benchmark: the backup job's extract throughput against a raw COPY, memory, sizes.

    .venv/bin/python benchmarks/bench_backup.py [--rows 1000000] [--json out.json]

1. A scratch PostgreSQL database gets the demo schema and one session of ``--rows`` rows
   (``seed_large_session``), then ``ANALYZE``; it is dropped at the end whatever happens.
2. Reference: for every table of type ``inst``, the extraction's own SQL inside
   ``COPY (...) TO STDOUT`` read with psycopg 3 (warm-up pass, then best of 3).
3. The real ``backup_job`` (in-process executor, ``keep_source=True``) through
   ``execute_in_process`` on an ephemeral instance, in a child process so its peak RSS is its
   own: warm-up run, then best of 3. Extract time = sum of the ``extract_*`` step durations
   (STEP_START -> STEP_SUCCESS in the event log).
4. Sizes: the backup's Parquet bytes (manifest total) vs the PHP original's format, one JSON
   blob of row objects per table (``json.dumps(default=str)``), also timed.
5. A table with PASS/FAIL per target; ``--json PATH`` writes every figure.

The child entry point is this same file with ``--child`` (internal).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Row  # noqa: E402

TYPE_NAME = "inst"
TARGET_RATIO = 0.8  # extract rows/s >= 0.8 x COPY rows/s
TARGET_RSS_MB = 300.0
TARGET_SIZE_RATIO = 0.1  # parquet bytes <= 0.1 x JSON bytes


# ---------------------------------------------------------------------------- child


def _manifest_size(location: str) -> int | None:
    from htd_pipelines import settings
    from htd_pipelines.store.manifest import MANIFEST_FILE
    from htd_pipelines.store.snapshots import SnapshotStore

    store = SnapshotStore(settings.snapshot_uri())
    try:
        return store.fs.get_file_info(store.full(f"{location}/{MANIFEST_FILE}")).size
    except OSError:
        return None


@contextmanager
def _null():
    yield None


def child_main(args: argparse.Namespace) -> None:
    """Run backup_job (warm-up + `repeat` runs) in this process; write figures as JSON."""
    t_import = time.perf_counter()
    from dagster import DagsterInstance

    from htd_pipelines.definitions import build_definitions
    from htd_pipelines.jobs.run_config import backup_run_config, backup_tags

    job = build_definitions().resolve_job_def("backup_job")
    import_s = time.perf_counter() - t_import
    rss_after_import = common.peak_rss_mb()

    run_config = backup_run_config(TYPE_NAME, [args.session], uid="bench", keep_source=True)
    run_config.update(common.quiet_loggers())
    tags = backup_tags(TYPE_NAME, [args.session], "bench")

    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")

    runs = []
    sampler = common.RssSampler(args.rss_interval) if args.rss_interval > 0 else None
    with DagsterInstance.ephemeral() as instance, sampler or _null():
        extra = 1 if profiler is not None else 0  # the profiled run comes last, untimed
        for i in range(1 + args.repeat + extra):
            timed = 0 < i <= args.repeat
            profiled = profiler is not None and i == 1 + args.repeat
            if profiled:
                profiler.start()
            host0, self0 = common.host_cpu_busy_s(), common.self_cpu_s()
            t0 = time.perf_counter()
            result = job.execute_in_process(
                run_config=run_config, instance=instance, tags=tags, raise_on_error=False
            )
            wall = time.perf_counter() - t0
            host1, self1 = common.host_cpu_busy_s(), common.self_cpu_s()
            if profiled:
                profiler.stop()
            if not result.success:
                from htd_pipelines.cli.launch import failure_message

                raise SystemExit(f"backup_job failed: {failure_message(result)}")
            windows = common.step_windows(instance, result.run_id)
            steps = {k: t1 - t0 for k, (t0, t1) in windows.items()}
            step_rss = (
                {k: sampler.peak_between(t0, t1) for k, (t0, t1) in windows.items()}
                if sampler
                else {}
            )
            (recorded,) = result.output_for_node("record_backup")
            extract_steps = {k: v for k, v in steps.items() if k.startswith("extract_")}
            runs.append(
                {
                    "timed": timed,
                    "profiled": profiled,
                    "run_id": result.run_id,
                    "wall_s": wall,
                    "cpu_cores_job": (self1 - self0) / wall,
                    "cpu_cores_host": (host1 - host0) / wall if host0 is not None else None,
                    "extract_s": sum(extract_steps.values()),
                    "steps_s": steps,
                    "steps_peak_rss_mb": step_rss,
                    "rows": sum(recorded.rows.values()),
                    "rows_per_table": recorded.rows,
                    "parquet_bytes": recorded.bytes,
                    "manifest_bytes": _manifest_size(recorded.location),
                    "version": recorded.version,
                    "peak_rss_mb": common.peak_rss_mb(),
                }
            )
            # the result holds every op output (mem io manager): drop it before the next run
            del result, recorded
            gc.collect()
    if profiler is not None:
        Path(args.profile).write_text(profiler.output_html())
        Path(args.profile).with_suffix(".txt").write_text(
            profiler.output_text(unicode=True, color=False, show_all=False)
        )
    common.write_json(
        args.child_out,
        {
            "import_s": import_s,
            "rss_after_import_mb": rss_after_import,
            "peak_rss_mb": common.peak_rss_mb(),
            "runs": runs,
        },
    )


# ---------------------------------------------------------------------------- parent


def measure(args: argparse.Namespace) -> dict:
    from htd_pipelines.dialects.engine import get_engine

    out: dict = {"rows_requested": args.rows, "repeat": args.repeat}
    t_total = time.perf_counter()
    with common.scratch_postgres() as url, common.temp_workdir() as work:
        log(f"seeding {args.rows:,} rows into {url.rsplit('/', 1)[-1]} ...")
        seeded = common.seed_session(url, args.rows)
        out["seed_s"] = seeded.seconds
        out["session_id"] = seeded.session_id
        engine = get_engine(url)
        rtype = common.resolve_demo_type(engine, TYPE_NAME)
        ids = [seeded.session_id]
        sqls = {t.name: common.extraction_sql(engine, t, ids) for t in rtype.tables}

        log("COPY (...) TO STDOUT reference (text) ...")
        warm, best, all_s = common.copy_reference(url, sqls, repeat=args.repeat)
        out["copy"] = {
            "rows": warm.rows,
            "bytes": best.bytes,
            "best_s": best.seconds,
            "all_s": all_s,
            "rows_per_s": warm.rows / best.seconds,
            "per_table": {
                n: {**best.per_table[n], "rows": warm.per_table[n]["rows"]} for n in sqls
            },
        }
        if args.binary_copy:
            log("COPY (...) TO STDOUT (FORMAT BINARY), informational ...")
            _, bbest, ball = common.copy_reference(url, sqls, repeat=args.repeat, binary=True)
            out["copy_binary"] = {
                "bytes": bbest.bytes,
                "best_s": bbest.seconds,
                "all_s": ball,
                "rows_per_s": warm.rows / bbest.seconds,
                "per_table": bbest.per_table,
            }

        if args.json_blob:
            log("rows -> JSON blob (PHP format) ...")
            data_sqls = {t.name: common.data_columns_sql(engine, t, ids) for t in rtype.tables}
            blob = common.json_blob(url, data_sqls)
            out["json_blob"] = {
                "rows": blob.rows,
                "bytes": blob.bytes,
                "seconds": blob.seconds,
                "rows_per_s": blob.rows / blob.seconds if blob.seconds else None,
                "per_table_bytes": blob.per_table,
            }
        engine.dispose()

        log(f"backup_job in a child process: warm-up + best of {args.repeat} ...")
        env = common.htd_environment(url, work)
        child_args = ["--child", "--session", str(seeded.session_id), "--repeat", str(args.repeat)]
        child_args += ["--rss-interval", str(args.rss_interval)]
        if args.profile:
            child_args += ["--profile", str(Path(args.profile).resolve())]
        child = common.run_child(Path(__file__).resolve(), child_args, env)
        timed = [r for r in child["runs"] if r["timed"]]
        best_run = min(timed, key=lambda r: r["extract_s"])
        rows = best_run["rows"]
        if rows != warm.rows:
            raise SystemExit(f"row mismatch: backup {rows:,} rows vs COPY {warm.rows:,} rows")
        out["job"] = {
            "rows": rows,
            "extract_best_s": best_run["extract_s"],
            "extract_all_s": [r["extract_s"] for r in timed],
            "extract_rows_per_s": rows / best_run["extract_s"],
            "wall_best_s": min(r["wall_s"] for r in timed),
            "wall_all_s": [r["wall_s"] for r in timed],
            "cpu_cores_job_all": [r["cpu_cores_job"] for r in timed],
            "cpu_cores_host_all": [r["cpu_cores_host"] for r in timed],
            "warmup_wall_s": child["runs"][0]["wall_s"],
            "profiled_run": next((x for x in child["runs"] if x.get("profiled")), None),
            "steps_best_run_s": best_run["steps_s"],
            "steps_peak_rss_mb_best_run": best_run["steps_peak_rss_mb"],
            "steps_peak_rss_mb_max": {
                k: max((x["steps_peak_rss_mb"].get(k) or 0) for x in child["runs"])
                for k in best_run["steps_s"]
            },
            "parquet_bytes": best_run["parquet_bytes"],
            "manifest_bytes": best_run["manifest_bytes"],
            "peak_rss_mb": child["peak_rss_mb"],
            "rss_after_import_mb": child["rss_after_import_mb"],
            "parent_children_maxrss_mb": child["parent_children_maxrss_mb"],
            "import_s": child["import_s"],
            "runs": child["runs"],
        }
    out["ratio_extract_copy"] = out["job"]["extract_rows_per_s"] / out["copy"]["rows_per_s"]
    if "json_blob" in out:
        out["ratio_parquet_json"] = out["job"]["parquet_bytes"] / out["json_blob"]["bytes"]
    out["total_s"] = time.perf_counter() - t_total
    return out


def report(r: dict) -> bool:
    mb = common.MB
    job, copy = r["job"], r["copy"]
    blob = r.get("json_blob")
    rows = [
        Row("rows backed up (all tables)", job["rows"]),
        Row("COPY TO STDOUT rows/s (psycopg, text)", copy["rows_per_s"]),
    ]
    if "copy_binary" in r:
        rows.append(Row("  info: COPY BINARY rows/s", r["copy_binary"]["rows_per_s"]))
    rows += [
        Row("extract rows/s (sum of extract_* steps)", job["extract_rows_per_s"]),
        Row(
            "ratio extract / COPY",
            r["ratio_extract_copy"],
            "{:.2f}",
            f">= {TARGET_RATIO}",
            lambda v: v >= TARGET_RATIO,
        ),
        Row(
            "peak RSS of the job process, all runs (MB)",
            job["peak_rss_mb"],
            "{:,.0f}",
            f"< {TARGET_RSS_MB:.0f}",
            lambda v: v < TARGET_RSS_MB,
        ),
        Row("  info: peak RSS after 1st run (MB)", job["runs"][0]["peak_rss_mb"], "{:,.0f}"),
        Row("  info: RSS after imports (MB)", job["rss_after_import_mb"], "{:,.0f}"),
        Row("Parquet size (MB)", job["parquet_bytes"] / mb, "{:,.1f}"),
        Row("  info: manifest.json size (MB)", (job["manifest_bytes"] or 0) / mb, "{:,.1f}"),
        Row("JSON blob size (MB)", blob["bytes"] / mb if blob else None, "{:,.1f}"),
        Row(
            "ratio Parquet / JSON",
            r.get("ratio_parquet_json"),
            "{:.3f}",
            f"<= {TARGET_SIZE_RATIO}",
            lambda v: v <= TARGET_SIZE_RATIO,
        ),
        Row(
            "  info: ratio (Parquet + manifest) / JSON",
            ((job["parquet_bytes"] + (job["manifest_bytes"] or 0)) / blob["bytes"])
            if blob
            else None,
            "{:.3f}",
        ),
        Row("rows -> JSON blob rows/s", blob["rows_per_s"] if blob else None),
        Row("job wall time, best (s)", job["wall_best_s"], "{:,.2f}"),
        Row("extract steps, best (s)", job["extract_best_s"], "{:,.2f}"),
        Row("COPY pass, best (s)", copy["best_s"], "{:,.2f}"),
    ]
    ok = common.print_table(
        f"\nbackup benchmark: {job['rows']:,} rows, PostgreSQL, best of {r['repeat']}", rows
    )
    # per-table breakdown: where the extract time goes relative to COPY
    steps = job["steps_best_run_s"]
    rss = job.get("steps_peak_rss_mb_max") or {}

    def mb(key: str) -> str:
        v = rss.get(key)
        return f"{v:8.0f}" if v else "     n/a"

    print(
        "\nper step (best run)            rows   COPY s  extract s  COPY/extract  peak RSS MB"
        " (max over runs)"
    )
    for name, t in copy["per_table"].items():
        key = f"extract_{name}"
        ext = steps.get(key)
        ratio = f"{t['seconds'] / ext:12.2f}" if ext else "         n/a"
        ext_s = f"{ext:9.3f}" if ext is not None else "      n/a"
        print(f"  {name:<22} {t['rows']:>10,} {t['seconds']:8.3f} {ext_s} {ratio} {mb(key)}")
    for k, v in steps.items():
        if not k.startswith("extract_"):
            print(f"  {k:<22} {'':>10} {'':>8} {v:9.3f} {'':>12} {mb(k)}")
    print(
        f"  runs: extract {', '.join(f'{s:.2f}' for s in job['extract_all_s'])} s; "
        f"wall {', '.join(f'{s:.2f}' for s in job['wall_all_s'])} s "
        f"(warm-up {job['warmup_wall_s']:.2f} s); COPY "
        f"{', '.join(f'{s:.2f}' for s in copy['all_s'])} s; seed {r['seed_s']:.1f} s; "
        f"total {r['total_s']:.1f} s"
    )
    if all(v is not None for v in job["cpu_cores_host_all"]):
        print(
            f"  CPU during timed runs (cores busy, {os.cpu_count()} available): host "
            f"{', '.join(f'{v:.2f}' for v in job['cpu_cores_host_all'])}; job process "
            f"{', '.join(f'{v:.2f}' for v in job['cpu_cores_job_all'])} "
            "(host - job = database server + anything else running)"
        )
    return ok


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the seeded session")
    p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is kept)")
    p.add_argument(
        "--no-binary-copy",
        dest="binary_copy",
        action="store_false",
        help="skip the informational COPY (FORMAT BINARY) reference",
    )
    p.add_argument(
        "--no-json-blob", dest="json_blob", action="store_false", help="skip the JSON blob"
    )
    p.add_argument(
        "--profile",
        metavar="HTML",
        help="pyinstrument-profile one extra, untimed job run (writes HTML and .txt)",
    )
    p.add_argument(
        "--rss-interval",
        type=float,
        default=0.01,
        help="seconds between RSS samples in the job process for per-step peak RSS (0: off)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    # internal: the child process entry point
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--session", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    if args.rows < 1:
        raise SystemExit("--rows must be >= 1")
    results = measure(args)
    ok = report(results)
    if args.json:
        common.write_json(args.json, results)
        print(f"\nfigures written to {args.json}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
