"""Shared helpers for the benchmarks (backup now, restore later).

Everything here is plain Python: no Dagster import at module level, so the parent process of a
benchmark stays light and the job runs (and their peak RSS) happen in a child process.

* scratch PostgreSQL database with the demo schema and one large seeded session
* the extraction SQL per table of a type, and a psycopg ``COPY (...) TO STDOUT`` reference
* the PHP-style "rows as one JSON blob" encoding (size and speed)
* running a job in a child process and reading step durations from the event log
* a PASS/FAIL results table and the optional ``--json`` output
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the tests' helper package (tests.support) from a script run
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from htd_pipelines import settings  # noqa: E402
from htd_pipelines.dialects.engine import get_engine  # noqa: E402
from htd_pipelines.registry.resolved import REL_COLUMN, ResolvedType, TablePlan, resolve_type  # noqa: E402
from htd_pipelines.registry.spec import load_registry  # noqa: E402

MB = 1024 * 1024


# ---------------------------------------------------------------------------- memory


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except OSError:
        return float("nan")


def hwm_rss_mb() -> float | None:
    """This process's own peak RSS in MiB: VmHWM of /proc/self/status (None off Linux).

    Prefer it to `peak_rss_mb()` in a child process: Linux carries ru_maxrss across fork and
    execve, so a child's ru_maxrss is at least its parent's RSS at the moment it was spawned
    (a parent holding 500 MB makes every child report >= 500 MB). VmHWM belongs to the address
    space the child got at execve, so it counts only the child's own memory.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_hwm_rss() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``); False if impossible.

    After this, `hwm_rss_mb()` is the peak of what runs next: one measured run, not the
    process's whole life.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def host_cpu_busy_s() -> float | None:
    """Busy CPU seconds of the whole host so far (/proc/stat, all cores; None off Linux).

    Compared with the CPU time of the measured process over the same window it shows whether
    something else (another test suite, the database serving others) competed for the cores.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(
    max_busy_cores: float = 0.25, window_s: float = 1.0, timeout_s: float = 60.0
) -> dict:
    """Wait until the host's busy cores over `window_s` drop to `max_busy_cores` (or timeout).

    On a shared machine (another test suite, another benchmark) timings are only comparable
    when nothing else runs. Returns {"waited_s", "busy_cores" (of the last window), "quiet"}.
    Off Linux it returns at once with quiet None.
    """
    t0 = time.perf_counter()
    busy = None
    while True:
        b0 = host_cpu_busy_s()
        if b0 is None:
            return {"waited_s": 0.0, "busy_cores": None, "quiet": None}
        time.sleep(window_s)
        busy = (host_cpu_busy_s() - b0) / window_s
        waited = time.perf_counter() - t0
        if busy <= max_busy_cores or waited >= timeout_s:
            return {"waited_s": waited, "busy_cores": busy, "quiet": busy <= max_busy_cores}


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------- database


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database (tests/support/dbs.py conventions); always dropped."""
    from tests.support.dbs import drop_database, new_database

    url = new_database("postgresql", None)
    try:
        yield url
    finally:
        drop_database(url)


@dataclass
class SeededSession:
    url: str
    session_id: int
    counts: dict[str, int]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


def seed_session(url: str, rows: int, *, seed: int = 0) -> SeededSession:
    """Demo schema + one session of `rows` related rows (seed_large_session), then ANALYZE."""
    from htd_pipelines.demo.schema import create_demo_schema
    from htd_pipelines.demo.seed import large_session_counts, seed_large_session

    engine = get_engine(url)
    t0 = time.perf_counter()
    create_demo_schema(engine)
    sid = seed_large_session(engine, rows, seed=seed)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))
    return SeededSession(url, sid, large_session_counts(rows), time.perf_counter() - t0)


def psycopg_connect(url: str, **kwargs) -> psycopg.Connection:
    """A raw psycopg 3 connection to a SQLAlchemy-style postgresql URL (UTC session)."""
    u = make_url(url)
    return psycopg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password,
        dbname=u.database,
        options="-c timezone=UTC",
        **kwargs,
    )


def resolve_demo_type(engine: Engine, type_name: str = "inst") -> ResolvedType:
    return resolve_type(engine, load_registry(settings.DEMO_RELATIONS_FILE).get(type_name))


def extraction_sql(engine: Engine, tplan: TablePlan, ids: Sequence) -> str:
    """Exactly the SQL the extraction runs for one table (ids bound as literals)."""
    stmt = tplan.select_rows().params(ids=list(ids))
    return str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))


def data_columns_sql(engine: Engine, tplan: TablePlan, ids: Sequence) -> str:
    """The extraction SQL without the relation-id column (the table's own columns only)."""
    prep = engine.dialect.identifier_preparer
    cols = ", ".join(f"q.{prep.quote(c.name)}" for c in tplan.columns)
    return f"SELECT {cols} FROM ({extraction_sql(engine, tplan, ids)}) AS q"


# ---------------------------------------------------------------------------- any dialect
# (added for bench_restore.py: PostgreSQL and MariaDB)


@contextmanager
def scratch_database(dialect: str) -> Iterator[str]:
    """A new, empty database on `dialect` ("postgresql" | "mariadb"); always dropped afterwards."""
    from tests.support.dbs import drop_database, new_database

    url = new_database(dialect, None)
    try:
        yield url
    finally:
        drop_database(url)


def dialect_of(url: str) -> str:
    """The dialect of a scratch database URL: "postgresql" or "mariadb" (tests/support/dbs.py)."""
    from tests.support.dbs import dialect_of as _dialect_of

    return _dialect_of(url)


def seed_session_any(url: str, rows: int, *, seed: int = 0) -> SeededSession:
    """`seed_session` on PostgreSQL; on MariaDB the same seeding, then ``ANALYZE TABLE``."""
    if dialect_of(url) == "postgresql":
        return seed_session(url, rows, seed=seed)
    from htd_pipelines.demo.schema import SESSION_TABLES, create_demo_schema
    from htd_pipelines.demo.seed import large_session_counts, seed_large_session

    engine = get_engine(url)
    t0 = time.perf_counter()
    create_demo_schema(engine)
    sid = seed_large_session(engine, rows, seed=seed)
    names = ", ".join(f"`{t}`" for t in ("process_session", *SESSION_TABLES))
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {names}").all()
    return SeededSession(url, sid, large_session_counts(rows), time.perf_counter() - t0)


def pymysql_connect(url: str, **kwargs):  # noqa: ANN201
    """A raw PyMySQL connection to a SQLAlchemy-style mysql URL (utf8mb4, UTC session)."""
    import pymysql

    u = make_url(url)
    kwargs.setdefault("charset", "utf8mb4")
    kwargs.setdefault("init_command", "SET time_zone = '+00:00'")
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=u.database,
        **kwargs,
    )


def owned_rows_sql(engine: Engine, tplan: TablePlan, ids: Sequence) -> str:
    """``SELECT <the table's own columns, uncast> FROM <table> WHERE <owned by ids>``.

    The rows the backup's delete removes (`where_owned`), as the table stores them: the input
    of a reference bulk export (COPY ... TO STDOUT (FORMAT binary), a LOAD DATA file).
    """
    stmt = sa.select(*[tplan.table.c[c.name] for c in tplan.columns]).where(tplan.where_owned())
    stmt = stmt.params(ids=list(ids))
    return str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))


def proc_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a local process has used so far (/proc; None if unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_backends_cpu_s(url: str) -> dict[int, float]:
    """CPU seconds so far of every server process connected to `url`'s database (pid -> s).

    Only meaningful when the server runs on this host (its /proc is ours). Taken before and
    after a run, the difference is what the database server spent on it: unlike wall time it
    barely moves when other processes compete for the cores. The querying backend is left out.
    """
    with psycopg_connect(url, autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    out = {}
    for pid in pids:
        cpu = proc_cpu_s(pid)
        if cpu is not None:
            out[pid] = cpu
    return out


def cpu_delta_s(before: dict[int, float], after: dict[int, float]) -> float:
    """Server CPU spent between two `pg_backends_cpu_s` snapshots (new backends count whole)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def pg_settle(url: str, tables: Sequence[str]) -> float:
    """VACUUM the tables, then CHECKPOINT (untimed set-up between timed runs); returns seconds.

    After a delete or a rolled-back load the tables hold dead tuples: without this, autovacuum
    may start in the middle of the next timed run, and a checkpoint triggered by the previous
    run's WAL may land in it. Every timed run (reference and restore) starts from this state.
    """
    t0 = time.perf_counter()
    with psycopg_connect(url, autocommit=True) as conn:
        for name in tables:
            conn.execute(f"VACUUM {name}")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - t0


QUIET_WAIT_S = 60.0  # default --quiet-wait of the per-dialect benchmarks
QUIET_MIN_ROWS = 100_000  # below this (smoke runs) the default is not to wait


def log(msg: str) -> None:
    """A progress line on stderr (stdout holds the figures)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def dialect_parser(description: str | None, runs: str = "run") -> argparse.ArgumentParser:
    """The options every per-dialect benchmark has (--rows, --dialect, --json, --quiet-wait,
    --strict); `runs` names what is timed in the --quiet-wait help ("run", "step")."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--rows",
        type=int,
        help="rows in the seeded session (default: 1,000,000 on postgresql, 200,000 on mariadb)",
    )
    p.add_argument("--dialect", choices=["postgresql", "mariadb", "both"], default="postgresql")
    p.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    p.add_argument(
        "--quiet-wait",
        type=float,
        metavar="S",
        help=f"before every timed {runs} wait up to S seconds for the host to be idle\n"
        "(busy <= 0.25 cores over 1 s; other test suites skew timings on a small host);\n"
        f"0: off; default {QUIET_WAIT_S:.0f} s, off below {QUIET_MIN_ROWS:,} rows (smoke mode)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    return p


def print_quiet(waits: list[dict], runs: str = "runs") -> None:
    """The line saying how many timed runs started on an idle host (wait_for_quiet results)."""
    if not waits:
        return
    noisy = sum(1 for q in waits if q["quiet"] is False)
    print(
        f"  idle host before timed {runs}: {len(waits) - noisy} of {len(waits)} "
        f"(waited up to {max(q['waited_s'] for q in waits):.0f} s)"
        + (f"; {noisy} started on a busy host: timings are noisy" if noisy else "")
    )


def run_dialects(
    args,  # noqa: ANN001 - argparse.Namespace from dialect_parser
    default_rows: dict[str, int],
    measure,  # noqa: ANN001 - (dialect, rows, args) -> figures
    report,  # noqa: ANN001 - figures -> every target met
) -> int:
    """The main loop of a per-dialect benchmark: measure and report each dialect of
    ``--dialect`` (``both``: PostgreSQL then MariaDB), wait for an idle host only at full size
    unless ``--quiet-wait`` says, write ``--json`` after every dialect (a failure in the next
    keeps these figures); the exit status (1 with ``--strict`` when a target failed)."""
    if args.rows is not None and args.rows < 1:
        raise SystemExit("--rows must be >= 1")
    dialects = ["postgresql", "mariadb"] if args.dialect == "both" else [args.dialect]
    results, ok = {}, True
    explicit_wait = args.quiet_wait
    for d in dialects:
        rows = args.rows or default_rows[d]
        if explicit_wait is None:
            args.quiet_wait = QUIET_WAIT_S if rows >= QUIET_MIN_ROWS else 0.0
        results[d] = measure(d, rows, args)
        ok = report(results[d]) and ok
        if args.json:
            write_json(args.json, results)
    if args.json:
        print(f"\nfigures written to {args.json}")
    return 1 if args.strict and not ok else 0


# ---------------------------------------------------------------------------- COPY reference


@dataclass
class CopyPass:
    seconds: float
    rows: int
    bytes: int
    per_table: dict[str, dict] = field(default_factory=dict)


def copy_pass(
    conn: psycopg.Connection,
    sqls: dict[str, str],
    *,
    binary: bool = False,
    count_rows: bool = False,
) -> CopyPass:
    """`COPY (sql) TO STDOUT` per table, every chunk read and its bytes counted.

    With `count_rows` (text format only; used for the untimed warm-up so the timed passes do
    no extra work) rows are counted from the stream: in text format every row ends with exactly
    one newline (newlines inside values are escaped). Otherwise rows are reported as -1.
    """
    count_rows = count_rows and not binary
    total_rows = total_bytes = 0
    per_table = {}
    opts = " (FORMAT BINARY)" if binary else ""
    t_all = time.perf_counter()
    with conn.cursor() as cur:
        for name, sql in sqls.items():
            t0 = time.perf_counter()
            n_bytes = n_rows = 0
            with cur.copy(f"COPY ({sql}) TO STDOUT{opts}") as copy:
                for chunk in copy:
                    n_bytes += len(chunk)
                    if count_rows:
                        n_rows += bytes(chunk).count(b"\n")
            per_table[name] = {
                "rows": n_rows if count_rows else -1,
                "bytes": n_bytes,
                "seconds": time.perf_counter() - t0,
            }
            total_rows += n_rows
            total_bytes += n_bytes
    return CopyPass(
        time.perf_counter() - t_all, total_rows if count_rows else -1, total_bytes, per_table
    )


def copy_reference(
    url: str, sqls: dict[str, str], *, repeat: int = 3, binary: bool = False
) -> tuple[CopyPass, CopyPass, list[float]]:
    """Warm-up pass (untimed, counts rows), then best of `repeat` timed passes.

    Returns (warm-up pass with row counts, best timed pass, seconds of every timed pass).
    """
    with psycopg_connect(url, autocommit=True) as conn:
        warm = copy_pass(conn, sqls, binary=binary, count_rows=True)
        passes = [copy_pass(conn, sqls, binary=binary) for _ in range(repeat)]
    best = min(passes, key=lambda p: p.seconds)
    return warm, best, [p.seconds for p in passes]


# ---------------------------------------------------------------------------- JSON blob


@dataclass
class JsonBlob:
    seconds: float
    rows: int
    bytes: int
    per_table: dict[str, int] = field(default_factory=dict)


def json_blob(url: str, sqls: dict[str, str], *, fetch_rows: int = 10_000) -> JsonBlob:
    """Size and speed of the PHP original's format: one JSON blob of row objects per table.

    The blob is ``{"table": [{"col": value, ...}, ...], ...}`` as ``json.dumps(..., default=str)``
    would write it in one go (default separators, ASCII escapes). It is encoded table by table and
    batch by batch (server-side cursor) and only its length is kept, so memory stays low; the
    byte count equals ``len(json.dumps(whole_dict, default=str).encode())``.
    """
    from psycopg.rows import dict_row

    total_bytes = 2  # "{" ... "}"
    total_rows = 0
    per_table = {}
    t0 = time.perf_counter()
    with psycopg_connect(url, autocommit=False, row_factory=dict_row) as conn:
        for i, (name, sql) in enumerate(sqls.items()):
            size = (2 if i else 0) + len(json.dumps(name)) + len(": []")  # ", " between tables
            first = True
            with conn.cursor(name=f"htd_json_{i}") as cur:
                cur.itersize = fetch_rows
                cur.execute(sql)
                while rows := cur.fetchmany(fetch_rows):
                    text = json.dumps(rows, default=str)  # "[r1, r2, ...]"
                    size += len(text.encode()) - 2 + (0 if first else 2)
                    first = False
                    total_rows += len(rows)
            per_table[name] = size
            total_bytes += size
        conn.rollback()
    return JsonBlob(time.perf_counter() - t0, total_rows, total_bytes, per_table)


# ---------------------------------------------------------------------------- child runs


def htd_environment(url: str, workdir: Path, relations_file: str | None = None) -> dict:
    """Environment variables that point the code location at `url` and a snapshot folder.

    Returns the env dict for a child process (the current environment plus the HTD_* variables
    and a private DAGSTER_HOME); the snapshot folder lives under `workdir`.
    """
    env = dict(os.environ)
    env[settings.DATABASE_URL_ENV] = url
    env[settings.SNAPSHOT_URI_ENV] = str(workdir / "snapshots")
    env[settings.RELATIONS_FILE_ENV] = relations_file or str(settings.DEMO_RELATIONS_FILE)
    env[settings.HOME_ENV] = str(workdir / "home")
    env["DAGSTER_HOME"] = str(workdir / "dagster_home")
    (workdir / "dagster_home").mkdir(parents=True, exist_ok=True)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@contextmanager
def temp_workdir(prefix: str = "htd_bench_") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_child(script: Path, args: list[str], env: dict, *, timeout: float | None = None) -> dict:
    """Run `python script --child ... --child-out FILE` and return the JSON it wrote.

    The child's stdout/stderr go to a log file in a temp folder; on failure its tail is raised.
    The child reports its own peak RSS (RUSAGE_SELF); as a cross-check the result gets
    ``parent_children_maxrss_mb``: RUSAGE_CHILDREN's ru_maxrss, the largest peak among all
    children this process has waited for so far.
    """
    with tempfile.TemporaryDirectory(prefix="htd_child_") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "child.log"
        cmd = [sys.executable, str(script), *args, "--child-out", str(out)]
        with open(log, "wb") as logf:
            proc = subprocess.run(
                cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        if proc.returncode != 0 or not out.exists():
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"child {' '.join(cmd)} failed (exit {proc.returncode}):\n{tail}")
        result = json.loads(out.read_text())
        result["parent_children_maxrss_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
        return result


class RssSampler:
    """A daemon thread sampling this process's RSS every `interval` s: (time.time(), MiB) pairs.

    Reading /proc/self/statm costs ~20 us, so a 10 ms interval does not disturb the work.
    `peak_between(t0, t1)` gives the highest sample in a wall-clock window (e.g. one step).
    """

    def __init__(self, interval: float = 0.01) -> None:
        import threading

        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), current_rss_mb()))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, t0: float, t1: float) -> float | None:
        inside = [mb for t, mb in self.samples if t0 <= t <= t1]
        return max(inside) if inside else None


def step_windows(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """(STEP_START, STEP_SUCCESS or STEP_FAILURE) wall-clock timestamps per step key of a run."""
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or not entry.step_key:
            continue
        kind = ev.event_type_value
        if kind == "STEP_START":
            start[entry.step_key] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            end[entry.step_key] = entry.timestamp
    done = sorted((start[k], k) for k in start if k in end)  # execution order
    return {k: (start[k], end[k]) for _, k in done}


def step_durations(instance, run_id: str) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS (or STEP_FAILURE) per step key of a run."""
    return {k: t1 - t0 for k, (t0, t1) in step_windows(instance, run_id).items()}


def quiet_loggers(level: str = "WARNING") -> dict:
    """run_config fragment: console logger at `level` (the event log still records everything)."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}


# ---------------------------------------------------------------------------- reporting


@dataclass
class Row:
    label: str
    value: float | int | str | None
    fmt: str = "{:,.0f}"
    target: str = ""
    ok: Callable[[float], bool] | None = None

    def text(self) -> tuple[str, str, str, str]:
        if self.value is None:
            value = "n/a"
        elif isinstance(self.value, str):
            value = self.value
        else:
            value = self.fmt.format(self.value)
        verdict = ""
        if self.ok is not None and isinstance(self.value, int | float):
            verdict = "PASS" if self.ok(self.value) else "FAIL"
        return self.label, value, self.target, verdict


def print_table(title: str, rows: list[Row], out=sys.stdout) -> bool:
    """Print a results table; return True when every row with a target passes."""
    cells = [r.text() for r in rows]
    widths = [max(len(c[i]) for c in [("metric", "value", "target", "")] + cells) for i in range(4)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    print(title, file=out)
    print(line, file=out)
    header = ("metric", "value", "target", "")
    print(
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |", file=out
    )
    print(line, file=out)
    for c in cells:
        label, value, target, verdict = c
        print(
            f"| {label.ljust(widths[0])} | {value.rjust(widths[1])} | "
            f"{target.ljust(widths[2])} | {verdict.ljust(widths[3])} |",
            file=out,
        )
    print(line, file=out)
    return all(c[3] != "FAIL" for c in cells)


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


__all__ = [
    "MB",
    "REL_COLUMN",
    "CopyPass",
    "JsonBlob",
    "Row",
    "RssSampler",
    "SeededSession",
    "copy_pass",
    "copy_reference",
    "cpu_delta_s",
    "pg_backends_cpu_s",
    "proc_cpu_s",
    "dialect_of",
    "owned_rows_sql",
    "pg_settle",
    "pymysql_connect",
    "run_dialects",
    "QUIET_MIN_ROWS",
    "QUIET_WAIT_S",
    "dialect_parser",
    "log",
    "print_quiet",
    "scratch_database",
    "seed_session_any",
    "current_rss_mb",
    "host_cpu_busy_s",
    "hwm_rss_mb",
    "reset_hwm_rss",
    "self_cpu_s",
    "data_columns_sql",
    "extraction_sql",
    "htd_environment",
    "json_blob",
    "peak_rss_mb",
    "print_table",
    "psycopg_connect",
    "quiet_loggers",
    "resolve_demo_type",
    "run_child",
    "scratch_postgres",
    "seed_session",
    "step_durations",
    "step_windows",
    "temp_workdir",
    "wait_for_quiet",
    "write_json",
]
