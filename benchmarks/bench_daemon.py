"""End-to-end throughput of small sessions through dagster-daemon and deletion_marker_sensor.

For every combination of batch size (HTD_MARKER_BATCH_SIZE) and run concurrency
(max_concurrent_runs of the instance) this script:

1. creates two scratch PostgreSQL databases: Dagster's storage and the application's (demo
   schema), and seeds N small sessions (one process_session row plus 11 related rows each, by
   COPY);
2. starts one ``dagster-daemon`` on the production instance (a copy of deploy/dagster.yaml in a
   temporary DAGSTER_HOME; only ``max_concurrent_runs`` is changed when asked) with
   HTD_MARKER_BATCH_SIZE=b and HTD_MARKER_MAX_BATCHES=ceil(N/b), so that one tick launches
   every batch;
3. marks all N sessions for deletion in one UPDATE, turns deletion_marker_sensor on
   (``dagster sensor start``) and measures from the marking until every session is gone from
   process_session and has exactly one row in back_up (polled every 0.5 s, bounded timeout);
4. reads every run's events back from the run storage to show where the time went (queue,
   run-worker start-up, steps), then stops the daemon (and every process it started) and drops
   both databases.

sessions/min = N / elapsed minutes; the target is >= 1,000 sessions/min on a 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the repository on sys.path)

from htd_pipelines import settings
from htd_pipelines.demo.schema import create_demo_schema  # noqa: E402
from htd_pipelines.dialects.engine import get_engine  # noqa: E402
from htd_pipelines.store import catalog  # noqa: E402
from tests.support.daemon import (  # noqa: E402
    DEPLOY_INSTANCE,
    WORKSPACE,
    descendants,
    instance_of,
    pg_storage_env,
    production_home,
    run_tool,
    running,
    tool,
)

TARGET_PER_MIN = 1_000.0
POLL_S = 0.5
SENSOR = "deletion_marker_sensor"
TYPE_NAME = "inst"

#: related rows per seeded session (plus its process_session row)
SMALL_SHAPE = {
    "session_node": 2,
    "session_task": 2,
    "task_log": 2,
    "form_data": 1,
    "session_comment": 1,
    "attachment": 1,
    "data_table_row": 1,
    "session_operate_log": 1,
}
SEED_TABLES = ("process_session", *SMALL_SHAPE)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- seeding


def seed_small_sessions(url: str, n: int) -> float:
    """Demo schema + `n` small sessions (ids 1..n) with SMALL_SHAPE related rows, by COPY."""
    t0 = time.perf_counter()
    engine = get_engine(url)
    create_demo_schema(engine)
    catalog.ensure_catalog(engine)  # back_up & co. exist before the poll reads them
    now = dt.datetime.now(dt.UTC)
    created = now - dt.timedelta(days=3)
    meta = json.dumps({"source": "bench", "tags": ["小", "🔥"]}, ensure_ascii=False)
    cfg = json.dumps({"assignees": ["u_0001"], "timeout_h": 24})
    payload = json.dumps({"form": {"amount": "12.50"}, "round": 1})
    row_data = json.dumps({"sku": "SKU-000001", "qty": 3, "dims": [0.5, 1, None]})
    checksum = bytes(range(32))
    ids = range(1, n + 1)
    tables = {
        "process_session": (
            ("id", "name", "process_key", "status", "is_test", "creator_uid", "meta",
             "created_at", "updated_at"),
            ((i, f"small session #{i} 小", "expense_claim", 1, False, "u_bench", meta,
              created, now) for i in ids),
        ),
        "session_node": (
            ("id", "sess_id", "node_key", "name", "node_type", "position", "config",
             "created_at"),
            ((2 * i - 1 + k, i, f"node_{k}", "审批", "approval", k, cfg, created)
             for i in ids for k in range(2)),
        ),
        "session_task": (
            ("id", "sess_id", "node_id", "title", "assignee_uid", "status", "priority",
             "due_at", "payload", "created_at"),
            ((2 * i - 1 + k, i, 2 * i - 1 + k, f"task {k} of {i}", "u_0002", 1, 0, None,
              payload, created) for i in ids for k in range(2)),
        ),
        "task_log": (
            ("id", "task_id", "action", "message", "big_counter", "created_at"),
            ((2 * i - 1 + k, 2 * i - 1 + k, "approve", "ok ✓", 9_007_199_254_740_993, created)
             for i in ids for k in range(2)),
        ),
        "form_data": (
            ("id", "sess_id", "form_key", "data", "amount", "ratio", "submitted_at"),
            ((i, i, "main", payload, "1999.9900", 0.25, created) for i in ids),
        ),
        "session_comment": (
            ("id", "sess_id", "author_uid", "content", "created_at"),
            ((i, i, "u_0003", "同意 LGTM 👍", created) for i in ids),
        ),
        "attachment": (
            ("id", "sess_id", "file_name", "content_type", "remote_url", "size_bytes",
             "checksum", "thumbnail", "created_at"),
            ((i, i, "invoice.pdf", "application/pdf",
              f"https://files.example.com/htd/{i}/invoice.pdf", 12_345, checksum, None, created)
             for i in ids),
        ),
        "data_table_row": (
            ("id", "sess_id", "table_key", "row_no", "row_data", "created_at"),
            ((i, i, "line_items", 0, row_data, created) for i in ids),
        ),
        "session_operate_log": (
            ("id", "sess_id", "uid", "action", "detail", "created_at"),
            ((i, i, "u_bench", "submit", "状态 0 → 1", created) for i in ids),
        ),
    }  # fmt: skip
    with common.psycopg_connect(url) as conn:
        with conn.cursor() as cur:
            for name, (cols, rows) in tables.items():
                with cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"(SELECT max(id) FROM {name}))"
                )
        conn.commit()
    with common.psycopg_connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return time.perf_counter() - t0


def progress(conn) -> tuple[int, int, int]:  # noqa: ANN001
    """(sessions left, back_up rows, distinct sessions in back_up) for type inst."""
    return conn.execute(
        "SELECT (SELECT count(*) FROM process_session), count(*), count(DISTINCT relation_id) "
        "FROM back_up WHERE type = %s",
        (TYPE_NAME,),
    ).fetchone()


def connections(conn, databases: tuple[str, ...]) -> tuple[int, int]:  # noqa: ANN001
    """(client connections to `databases`, client connections to the whole server) now."""
    return conn.execute(
        "SELECT count(*) FILTER (WHERE datname = ANY(%s)), count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend'",
        (list(databases),),
    ).fetchone()


def pg_db_stats(conn, databases: tuple[str, ...]) -> dict[str, dict]:  # noqa: ANN001
    """pg_stat_database per database: sessions opened, ms spent executing statements, commits."""
    rows = conn.execute(
        "SELECT datname, sessions, active_time, xact_commit FROM pg_stat_database "
        "WHERE datname = ANY(%s)",
        (list(databases),),
    ).fetchall()
    return {r[0]: {"sessions": r[1], "active_s": r[2] / 1000, "commits": r[3]} for r in rows}


def postmaster_pid(conn) -> int | None:  # noqa: ANN001
    """The PostgreSQL server's main process: the parent of our backend (same host only)."""
    (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of `pid` and every live process below it, each with its reaped children
    (so finished run workers count through the code server that started them); Linux only."""
    if not Path("/proc").is_dir():
        return None
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def leftover_rows(conn) -> int:  # noqa: ANN001
    return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SEED_TABLES)


# ---------------------------------------------------------------------------- instance


def write_instance(home: Path, max_runs: int | None) -> dict:
    """Copy deploy/dagster.yaml into `home`; set max_concurrent_runs when given.

    Returns {configured, backup_tag_limit, effective}: backup runs also obey the
    ``htd/job: backup`` tag limit, so at most min(max_concurrent_runs, that limit) run at once.
    """
    production_home(home)
    doc = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    runs = doc["concurrency"]["runs"]
    if max_runs is not None and max_runs != runs["max_concurrent_runs"]:
        runs["max_concurrent_runs"] = max_runs
        (home / "dagster.yaml").write_text(
            "# deploy/dagster.yaml with max_concurrent_runs changed by bench_daemon.py\n"
            + yaml.safe_dump(doc, sort_keys=False)
        )
    tag_limit = next(
        (
            t["limit"]
            for t in runs.get("tag_concurrency_limits", [])
            if t.get("key") == "htd/job" and t.get("value") == "backup"
        ),
        None,
    )
    configured = runs["max_concurrent_runs"]
    effective = min(configured, tag_limit) if tag_limit is not None else configured
    return {"configured": configured, "backup_tag_limit": tag_limit, "effective": effective}


def wait_daemon_ready(env: dict, daemon, timeout: float = 120.0) -> float:  # noqa: ANN001
    """Until every required daemon has sent a heartbeat since start; returns seconds waited."""
    t0 = time.time()
    with instance_of(env) as instance:
        required = set(instance.get_required_daemon_types())
        while True:
            beats = instance.get_daemon_heartbeats()
            fresh = {k for k, hb in beats.items() if hb.timestamp >= t0 - 1}
            if required <= fresh:
                return time.time() - t0
            if not daemon.alive():
                raise RuntimeError(f"dagster-daemon exited:\n{daemon.log_tail()}")
            if time.time() - t0 > timeout:
                raise RuntimeError(
                    f"daemon not ready after {timeout:.0f} s (missing "
                    f"{sorted(required - fresh)}):\n{daemon.log_tail()}"
                )
            time.sleep(0.5)


def run_breakdown(env: dict, t_mark: float, finish_timeout: float = 60.0) -> dict:
    """Per backup_job run: queue, start-up and step times from the run storage's event log."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    kinds = {
        DagsterEventType.RUN_ENQUEUED.value: "enqueued",
        DagsterEventType.RUN_DEQUEUED.value: "dequeued",
        DagsterEventType.RUN_STARTING.value: "starting",
        DagsterEventType.RUN_START.value: "start",
        DagsterEventType.RUN_SUCCESS.value: "end",
        DagsterEventType.RUN_FAILURE.value: "end",
        DagsterEventType.RUN_CANCELED.value: "end",
    }
    with instance_of(env) as instance:
        deadline = time.monotonic() + finish_timeout
        while True:  # the last RUN_SUCCESS may land just after the last delete commits
            records = list(instance.get_run_records(RunsFilter(job_name="backup_job")))
            if all(r.dagster_run.status in finished for r in records):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        runs = []
        for rec in records:
            run = rec.dagster_run
            marks: dict[str, float] = {}
            step_start: dict[str, float] = {}
            steps: dict[str, float] = {}
            problems: list[str] = []
            for entry in instance.all_logs(run.run_id):
                ev = entry.dagster_event
                if ev is None:
                    continue
                kind = ev.event_type_value
                error = getattr(ev.event_specific_data, "error", None)
                if kind in ("RUN_FAILURE", "STEP_FAILURE") or error is not None:
                    text = f"{kind}: {entry.message}"
                    if error is not None:
                        text += f" | {error.message.strip()}"
                    problems.append(text[:2000])
                if kind in kinds:
                    marks.setdefault(kinds[kind], entry.timestamp)
                elif entry.step_key and kind == "STEP_START":
                    step_start[entry.step_key] = entry.timestamp
                elif entry.step_key and kind in ("STEP_SUCCESS", "STEP_FAILURE"):
                    steps[entry.step_key] = entry.timestamp - step_start.get(
                        entry.step_key, entry.timestamp
                    )
            ids = run.tags.get("htd/relation_ids", "")
            runs.append(
                {
                    "run_id": run.run_id,
                    "status": run.status.value,
                    "sessions": len(ids.split(",")) if ids else 0,
                    "created": rec.create_timestamp.timestamp(),
                    **marks,
                    "steps_s": steps,
                    "problems": problems,
                }
            )
    runs.sort(key=lambda r: r["created"])

    def span(r: dict, a: str, b: str) -> float | None:
        return r[b] - r[a] if a in r and b in r else None

    def avg(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    step_groups: dict[str, list[float]] = {}
    for r in runs:
        for k, v in r["steps_s"].items():
            group = "extract_*" if k.startswith("extract_") else k
            step_groups.setdefault(group, []).append(v)
    n_runs = len(runs) or 1
    starts = [r["starting"] for r in runs if "starting" in r]
    ends = [r["end"] for r in runs if "end" in r]
    return {
        "runs": runs,
        "statuses": {s: sum(r["status"] == s for r in runs) for s in {r["status"] for r in runs}},
        "first_run_created_s": runs[0]["created"] - t_mark if runs else None,
        "last_run_created_s": runs[-1]["created"] - t_mark if runs else None,
        "first_launch_s": min(starts) - t_mark if starts else None,
        "last_end_s": max(ends) - t_mark if ends else None,
        "avg_queue_wait_s": avg([span(r, "enqueued", "starting") for r in runs]),
        "avg_startup_s": avg([span(r, "starting", "start") for r in runs]),
        "avg_execute_s": avg([span(r, "start", "end") for r in runs]),
        "avg_slot_s": avg([span(r, "starting", "end") for r in runs]),
        "avg_steps_s": avg([sum(r["steps_s"].values()) for r in runs]),
        # per run, summed over its steps of that kind, averaged over runs
        "avg_step_group_s": {k: sum(v) / n_runs for k, v in step_groups.items()},
    }


# ---------------------------------------------------------------------------- one case


def run_case(n: int, batch: int, max_runs: int | None, timeout: float, logs: Path | None) -> dict:
    batches = math.ceil(n / batch)
    out: dict = {"sessions": n, "batch_size": batch, "max_batches": batches}
    with ExitStack() as stack:
        work = stack.enter_context(common.temp_workdir("htd_bench_daemon_"))
        storage_url = stack.enter_context(common.scratch_postgres())
        app_url = stack.enter_context(common.scratch_postgres())
        home = work / "dagster_home"
        out["concurrency"] = write_instance(home, max_runs)
        env = {
            "DAGSTER_HOME": str(home),
            **pg_storage_env(storage_url),
            settings.DATABASE_URL_ENV: app_url,
            settings.SNAPSHOT_URI_ENV: str(work / "snapshots"),
            settings.RELATIONS_FILE_ENV: str(settings.DEMO_RELATIONS_FILE),
            settings.HOME_ENV: str(work / "htd_home"),
            "HTD_MARKER_BATCH_SIZE": str(batch),
            "HTD_MARKER_MAX_BATCHES": str(batches),
        }
        proc_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}

        out["seed_s"] = seed_small_sessions(app_url, n)
        log(f"  seeded {n:,} sessions in {out['seed_s']:.1f} s")
        with instance_of(env):
            pass  # creates Dagster's tables before the daemon starts
        daemon_log = work / "daemon.log"
        argv = [tool("dagster-daemon"), "run", "-w", str(WORKSPACE)]
        try:
            daemon = stack.enter_context(running("dagster-daemon", argv, proc_env, daemon_log))
            out["daemon_ready_s"] = wait_daemon_ready(env, daemon)
            log(f"  daemon ready after {out['daemon_ready_s']:.1f} s; marking {n:,} sessions")

            poll = stack.enter_context(common.psycopg_connect(app_url, autocommit=True))
            dbs = (make_url(storage_url).database, make_url(app_url).database)
            out["load_avg_1m_before"] = load_average()
            pg_main = postmaster_pid(poll)
            stats0 = pg_db_stats(poll, dbs)
            pg0 = tree_cpu_s(pg_main) if pg_main else None
            host0, dagster0 = common.host_cpu_busy_s(), tree_cpu_s(daemon.proc.pid)
            t_mark = time.time()
            poll.execute(
                "UPDATE process_session SET delete_marked_at = now(), delete_marked_by = 'bench'"
            )
            t_cli = time.time()
            cli_out = run_tool([tool("dagster"), "sensor", "start", SENSOR, "-w", str(WORKSPACE)],
                               proc_env)  # fmt: skip
            if "Started sensor" not in cli_out:
                raise RuntimeError(f"dagster sensor start: {cli_out}")
            out["sensor_start_cli_s"] = time.time() - t_cli
            samples: list[tuple[float, int, int, int]] = []
            elapsed = None
            first_gone = None
            max_conn = [0, 0]
            while True:
                left, backups, distinct = progress(poll)
                now = time.time() - t_mark
                ours, server = connections(poll, dbs)
                max_conn = [max(max_conn[0], ours), max(max_conn[1], server)]
                samples.append((round(now, 2), left, backups, distinct, ours, server))
                if first_gone is None and left < n:
                    first_gone = now
                if left == 0 and backups == n and distinct == n:
                    elapsed = now
                    break
                if backups > distinct:
                    log(f"  {backups - distinct} session(s) backed up twice")
                    break
                if not daemon.alive():
                    raise RuntimeError(f"dagster-daemon exited:\n{daemon.log_tail()}")
                if now > timeout:
                    log(f"  timed out after {timeout:.0f} s: {left:,} left, {distinct:,} backed up")
                    break
                time.sleep(POLL_S)
            host1, dagster1 = common.host_cpu_busy_s(), tree_cpu_s(daemon.proc.pid)
            pg1 = tree_cpu_s(pg_main) if pg_main else None
            wall = time.time() - t_mark
            time.sleep(1.5)  # backends report their statistics at most once a second
            stats1 = pg_db_stats(poll, dbs)
            storage_db, app_db = dbs
            out["pg_stats"] = {
                role: {k: stats1[db][k] - stats0[db][k] for k in stats1[db]}
                for role, db in (("dagster_storage", storage_db), ("application", app_db))
                if db in stats0 and db in stats1
            }
            out["elapsed_s"] = elapsed
            out["max_connections"] = {"bench_databases": max_conn[0], "server": max_conn[1]}
            out["load_avg_1m_after"] = load_average()
            out["dagster_cores_busy"] = (
                (dagster1 - dagster0) / wall if dagster0 is not None else None
            )
            out["postgres_cores_busy"] = (pg1 - pg0) / wall if pg0 is not None else None
            out["first_session_gone_s"] = first_gone
            out["final"] = {"left": left, "backups": backups, "distinct_backups": distinct}
            out["leftover_rows"] = leftover_rows(poll)
            out["host_cores_busy"] = (host1 - host0) / wall if host0 is not None else None
            out["samples"] = samples
            out["breakdown"] = run_breakdown(env, t_mark)
        finally:
            if logs is not None and daemon_log.exists():
                logs.mkdir(parents=True, exist_ok=True)
                tag = f"b{batch}_c{out.get('concurrency', {}).get('configured')}"
                shutil.copyfile(daemon_log, logs / f"daemon_{tag}.log")
        # ExitStack: closes the poll connection, stops the daemon (and the code server and run
        # workers it started), drops both databases, removes the temp folder
    rate = n / (out["elapsed_s"] / 60) if out["elapsed_s"] else None
    out["sessions_per_min"] = rate
    out["runs"] = len(out["breakdown"]["runs"])
    out["failed_runs"] = out["runs"] - out["breakdown"]["statuses"].get("SUCCESS", 0)
    # PASS = every session backed up once and deleted, at >= 1,000/min (a run that failed and
    # was retried by the daemon still counts; it is reported in the "failed runs" column)
    out["ok"] = bool(rate is not None and rate >= TARGET_PER_MIN)
    return out


# ---------------------------------------------------------------------------- report


def other_cores(r: dict) -> float | None:
    parts = [r.get("host_cores_busy"), r.get("dagster_cores_busy"), r.get("postgres_cores_busy")]
    if any(v is None for v in parts):
        return None
    return parts[0] - parts[1] - parts[2]


def fmt(v: float | None, spec: str = "{:.1f}") -> str:
    return "n/a" if v is None else spec.format(v)


def report(results: list[dict]) -> bool:
    n = results[0]["sessions"] if results else 0
    head = ("batch size", "max concurrent runs", "backup runs at once", "runs", "failed runs",
            "elapsed s", "sessions/min", f">= {TARGET_PER_MIN:,.0f}/min")  # fmt: skip
    rows = []
    for r in results:
        c = r["concurrency"]
        rows.append(
            (
                str(r["batch_size"]),
                str(c["configured"]),
                str(c["effective"]),
                str(r["runs"]),
                str(r["failed_runs"]),
                fmt(r["elapsed_s"]),
                fmt(r["sessions_per_min"], "{:,.0f}"),
                "PASS" if r["ok"] else "FAIL",
            )
        )
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(f"\ndaemon end-to-end: {n:,} small sessions (12 rows each), deletion_marker_sensor -> "
          "backup_job (in-process executor), PostgreSQL")  # fmt: skip
    print(line)
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print(line)
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(line)

    print("\nwhere the time goes (seconds; t = 0 at the marking UPDATE; per-run figures are means)")
    bhead = ("batch", "conc", "sensor CLI", "1st run created", "last run end", "done",
             "queue wait", "start-up", "steps", "plan", "extract*", "record", "delete",
             "cores host", "cores dagster", "cores pg", "cores other", "max conns",
             "pg sessions", "pg active s")  # fmt: skip
    brows = []
    for r in results:
        b = r["breakdown"]
        g = b["avg_step_group_s"]
        pg = r.get("pg_stats", {})
        brows.append(
            (
                str(r["batch_size"]),
                str(r["concurrency"]["configured"]),
                fmt(r.get("sensor_start_cli_s")),
                fmt(b["first_run_created_s"]),
                fmt(b["last_end_s"]),
                fmt(r["elapsed_s"]),
                fmt(b["avg_queue_wait_s"]),
                fmt(b["avg_startup_s"], "{:.2f}"),
                fmt(b["avg_steps_s"], "{:.2f}"),
                fmt(g.get("plan_backup"), "{:.2f}"),
                fmt(g.get("extract_*"), "{:.2f}"),
                fmt(g.get("record_backup"), "{:.2f}"),
                fmt(g.get("delete_source"), "{:.2f}"),
                fmt(r.get("host_cores_busy"), "{:.2f}"),
                fmt(r.get("dagster_cores_busy"), "{:.2f}"),
                fmt(r.get("postgres_cores_busy"), "{:.2f}"),
                fmt(other_cores(r), "{:.2f}"),
                f"{r['max_connections']['bench_databases']}/{r['max_connections']['server']}",
                "/".join(str(v.get("sessions", "?")) for v in pg.values()) or "n/a",
                "/".join(f"{v.get('active_s', 0):.1f}" for v in pg.values()) or "n/a",
            )
        )
    bw = [max(len(x) for x in col) for col in zip(bhead, *brows, strict=True)]
    print("  " + "  ".join(h.rjust(w) for h, w in zip(bhead, bw, strict=True)))
    for row in brows:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, bw, strict=True)))
    print(
        "  sensor CLI: `dagster sensor start` (the sensor ticks at once when turned on, then"
        " every 30 s)\n"
        "  queue wait: RUN_ENQUEUED -> RUN_STARTING; start-up: RUN_STARTING -> RUN_START (a new\n"
        "    run-worker process: interpreter, imports, code location, instance)\n"
        "  steps: the ops of one run, one after the other (in-process executor)\n"
        f"  cores host: the whole host ({os.cpu_count()} cores); cores dagster: the daemon, its"
        " code server and\n    every run worker; cores pg: the whole PostgreSQL server (all"
        " databases, other users' too);\n    cores other: host - dagster - pg, anything else"
        " running on the host (well above 0: the\n    figures are pessimistic)\n"
        "  max conns: peak client connections to the two scratch databases / to the whole server\n"
        "  pg sessions, pg active s: connections opened to, and seconds spent executing statements"
        " in,\n    Dagster's storage database / the application database (pg_stat_database)"
    )
    for r in results:
        extra = []
        if r["breakdown"]["statuses"] != {"SUCCESS": r["runs"]}:
            extra.append(f"run statuses {r['breakdown']['statuses']}")
            failed = [x for x in r["breakdown"]["runs"] if x["status"] != "SUCCESS"]
            first = failed[0]["problems"][-1:] if failed and failed[0]["problems"] else []
            if first:
                extra.append("first failure: " + " ".join(first[0].split())[:400])
        if r["leftover_rows"]:
            extra.append(f"{r['leftover_rows']:,} seeded rows left")
        if r["elapsed_s"] is None:
            extra.append(f"not finished: {r['final']}")
        if extra:
            print(f"  batch {r['batch_size']}, conc {r['concurrency']['configured']}: "
                  + "; ".join(extra))  # fmt: skip

    done = [r for r in results if r["sessions_per_min"]]
    if done:
        best = max(done, key=lambda r: r["sessions_per_min"])
        print(
            f"\nbest: batch size {best['batch_size']}, max_concurrent_runs "
            f"{best['concurrency']['configured']} ({best['concurrency']['effective']} backup runs "
            f"at once): {best['sessions_per_min']:,.0f} sessions/min"
        )
    print(
        "note: backup_job uses the in-process executor (one process per run, ops in sequence);\n"
        "the multiprocess executor would start one more process per op (12 ops per run here)."
    )
    return all(r["ok"] for r in results)


def parse_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=3_000, help="small sessions to seed and mark")
    p.add_argument(
        "--batch-sizes", type=parse_list, default=[100, 250, 500],
        help="HTD_MARKER_BATCH_SIZE values, comma separated (default 100,250,500)",
    )  # fmt: skip
    p.add_argument(
        "--concurrency", type=parse_list, default=[8, 2],
        help="max_concurrent_runs values, comma separated (default 8,2; 8 = deploy/dagster.yaml)",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=float, default=900.0,
        help="seconds to wait for one combination before calling it failed (default 900)",
    )  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    p.add_argument("--logs", metavar="DIR", help="keep each daemon's log in this folder")
    p.add_argument("--strict", action="store_true", help="exit 1 when a combination fails")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sessions < 1:
        raise SystemExit("--sessions must be >= 1")
    results = []
    t0 = time.perf_counter()
    for conc in args.concurrency:
        for batch in args.batch_sizes:
            log(f"batch size {batch}, max_concurrent_runs {conc}: {args.sessions:,} sessions")
            r = run_case(args.sessions, batch, conc, args.timeout,
                         Path(args.logs) if args.logs else None)  # fmt: skip
            log(f"  -> {fmt(r['elapsed_s'])} s, {fmt(r['sessions_per_min'], '{:,.0f}')}/min, "
                f"{r['runs']} runs")  # fmt: skip
            results.append(r)
    ok = report(results)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        common.write_json(args.json, {"target_per_min": TARGET_PER_MIN, "results": results})
        print(f"figures written to {args.json}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
