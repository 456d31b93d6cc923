"""Encryption benchmark: backup and restore throughput with and without encryption, same run.

    .venv/bin/python benchmarks/bench_encryption.py [--rows N] [--dialect postgresql|mariadb|both]
                                                    [--repeat R] [--json out.json] [--strict]

Per dialect, all in one process and one run:

1. A scratch database gets the demo schema and one session of ``--rows`` rows
   (``seed_large_session``), then ANALYZE; it is dropped at the end whatever happens.
2. Encryption is configured the production way, by environment variables only:
   ``HTD_ENCRYPTION_KEYS=bench:<fresh key>`` (``crypto.new_key()``) for the whole run, and
   ``HTD_ENCRYPTION_KEY_ID=bench`` only while the encrypted variant's ``SnapshotStore`` is
   built (``SnapshotStore`` reads the keyring from the environment when it is constructed,
   ``restore_backup`` builds its own store from the manifest's URI at call time). The two
   variants write to two snapshot folders. The variables are put back as they were afterwards.
3. Backup: ``backup_sessions(engine, registry, store, type_name="inst", relation_ids=[sid],
   keep_source=True)``. One untimed warm-up backup per variant (these two are the restore
   sources), then ``--repeat`` timed rounds, each plain then encrypted, so that load drifts
   hit both variants alike; best of R per variant. The timed backups' folders are removed
   after their sizes are read.
4. Restore: ``restore_backup(engine, registry, backup_id, uid="bench", run_id=...)`` of the
   plain and the encrypted warm-up backup. First a check that a restore is refused while the
   rows are still there (key conflicts), then the session's rows are deleted (children first)
   and ``--repeat`` rounds run, plain then encrypted; after every restore (untimed) the rows
   are deleted again and the ``back_up`` row is un-claimed. Best of R per variant. Unlike
   bench_restore.py the restores run in this process (what is compared is the two variants,
   under the same conditions); their peak RSS (``VmHWM``, reset before each) is for information.
5. ``load_snapshot``: ``restore.load_snapshot(store, manifest)`` (read, sha256, decrypt when
   encrypted, Parquet decode) of both backups, interleaved, best of R; and the same files only
   read, hashed and decrypted (``SnapshotStore.plaintext``, no Parquet decode): the pure
   crypto cost on the snapshot files.
6. A table with PASS/FAIL: encrypted / plain rows/s >= 0.9 for backup and for restore;
   snapshot MB plain / encrypted; ``--json PATH`` writes every figure.

PostgreSQL timed runs each start after ``VACUUM`` of the session tables and a ``CHECKPOINT``
(untimed). With ``--quiet-wait`` (default 60 s, off below 100,000 rows) every timed run first
waits for the host to be idle, as in bench_restore.py.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Row, log  # noqa: E402

TYPE_NAME = "inst"
TARGET_RATIO = 0.9  # encrypted rows/s >= 0.9 x plain rows/s (backup and restore)
DEFAULT_ROWS = {"postgresql": 1_000_000, "mariadb": 200_000}
KEY_ID = "bench"
VARIANTS = ("plain", "encrypted")  # the order of every round


# ---------------------------------------------------------------------------- set-up


@contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables; put the old values back afterwards."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_store(root: Path, variant: str):  # noqa: ANN201
    """The variant's SnapshotStore, built from the environment as a backup run builds it."""
    from htd_pipelines.store.crypto import KEY_ID_ENV
    from htd_pipelines.store.snapshots import SnapshotStore

    with environment({KEY_ID_ENV: KEY_ID if variant == "encrypted" else None}):
        store = SnapshotStore(str(root / f"snapshots-{variant}"))
    expected = KEY_ID if variant == "encrypted" else None
    if store.encrypt_key_id != expected:
        raise SystemExit(
            f"{variant} store encrypts with {store.encrypt_key_id!r}, not {expected!r}"
        )
    return store


def reset_restore(engine, rtype, ids: list, backup_id: int | None) -> float:  # noqa: ANN001
    """Delete the session's rows (children first); un-claim `backup_id` (after a restore)."""
    import sqlalchemy as sa

    from htd_pipelines.store.catalog import back_up

    t0 = time.perf_counter()
    with engine.begin() as conn:
        for tplan in reversed(rtype.tables):
            conn.execute(sa.delete(tplan.table).where(tplan.where_owned()), {"ids": ids})
        if backup_id is not None:
            conn.execute(
                back_up.update()
                .where(back_up.c.id == backup_id)
                .values(is_reback=0, restored_at=None, restored_by=None, restore_run_id=None)
            )
    return time.perf_counter() - t0


def owned_counts(engine, rtype, ids: list) -> dict[str, int]:  # noqa: ANN001
    """Rows of the session per table (what a backup captures, a restore writes back)."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        return {
            t.name: conn.execute(
                sa.select(sa.func.count()).select_from(t.table).where(t.where_owned()),
                {"ids": ids},
            ).scalar_one()
            for t in rtype.tables
        }


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


def check_backup(store, recorded, variant: str) -> None:  # noqa: ANN001
    """The stored manifest and the files' headers say what the variant should be."""
    encrypted = variant == "encrypted"
    manifest = manifest_of(store, recorded)
    for t in manifest.tables:
        key_id = store.key_id_of(f"{manifest.location}/{t.file}")
        if t.encrypted != encrypted or key_id != (KEY_ID if encrypted else None):
            raise SystemExit(
                f"{variant} backup {recorded.backup_id}: table {t.table} is stored with key id "
                f"{key_id!r} (manifest: encrypted={t.encrypted}, key_id={t.key_id!r})"
            )
    if (manifest.encryption is not None) != encrypted:
        raise SystemExit(f"{variant} backup {recorded.backup_id}: manifest.encryption is wrong")


def manifest_of(store, recorded):  # noqa: ANN001, ANN201
    """The backup's manifest, read back from the store (decrypted when encrypted)."""
    from htd_pipelines.store.manifest import MANIFEST_FILE, Manifest

    text = store.read_plain(f"{recorded.location}/{MANIFEST_FILE}").decode()
    return Manifest.from_json(text)


# ---------------------------------------------------------------------------- measurements


def timed_backup(engine, registry, store, url, rtype, sid, run_id, args):  # noqa: ANN001, ANN201
    from htd_pipelines.delete import backup_sessions

    gc.collect()
    settle_s = settle(url, rtype)
    quiet = quiet_wait(args.quiet_wait)
    pg = common.dialect_of(url) == "postgresql"
    server0 = common.pg_backends_cpu_s(url) if pg else None
    self0 = common.self_cpu_s()
    t0 = time.perf_counter()
    (recorded,) = backup_sessions(
        engine,
        registry,
        store,
        type_name=TYPE_NAME,
        relation_ids=[sid],
        uid="bench",
        run_id=run_id,
        keep_source=True,
    )
    wall = time.perf_counter() - t0
    client_cpu = common.self_cpu_s() - self0
    server_cpu = common.cpu_delta_s(server0, common.pg_backends_cpu_s(url)) if pg else None
    return recorded, {
        "wall_s": wall,
        "rows": sum(recorded.rows.values()),
        "bytes": recorded.bytes,
        "backup_id": recorded.backup_id,
        "cpu": {"client_s": client_cpu, "server_s": server_cpu},
        "settle_s": settle_s,
        "quiet": quiet,
    }


def timed_restore(engine, registry, url, rtype, ids, backup_id, run_id, args) -> dict:  # noqa: ANN001
    from htd_pipelines.restore import restore_backup

    gc.collect()
    settle_s = settle(url, rtype)
    quiet = quiet_wait(args.quiet_wait)
    pg = common.dialect_of(url) == "postgresql"
    hwm_reset = common.reset_hwm_rss()
    rss_before = common.current_rss_mb()
    server0 = common.pg_backends_cpu_s(url) if pg else None
    self0 = common.self_cpu_s()
    t0 = time.perf_counter()
    result = restore_backup(engine, registry, backup_id, uid="bench", run_id=run_id)
    wall = time.perf_counter() - t0
    client_cpu = common.self_cpu_s() - self0
    server_cpu = common.cpu_delta_s(server0, common.pg_backends_cpu_s(url)) if pg else None
    run = {
        "wall_s": wall,
        "rows": sum(result.rows.values()),
        "corrected": result.corrected,
        "cpu": {"client_s": client_cpu, "server_s": server_cpu},
        "rss_before_mb": rss_before,
        "peak_rss_mb": common.hwm_rss_mb() if hwm_reset else None,
        "settle_s": settle_s,
        "quiet": quiet,
    }
    del result
    run["reset_s"] = reset_restore(engine, rtype, ids, backup_id)
    return run


def read_files(store, manifest) -> float:  # noqa: ANN001
    """Read, sha256-check and (when encrypted) decrypt every file; no Parquet decode."""
    t0 = time.perf_counter()
    for t in manifest.tables:
        for _ in store.plaintext(f"{manifest.location}/{t.file}", t, whole=True):
            pass
    return time.perf_counter() - t0


def measure_dialect(dialect: str, rows_requested: int, args: argparse.Namespace) -> dict:
    from htd_pipelines import settings
    from htd_pipelines.dialects.engine import dispose_engines, get_engine
    from htd_pipelines.registry.spec import load_registry
    from htd_pipelines.restore import RestoreRefused, load_snapshot, restore_backup
    from htd_pipelines.store import catalog, crypto
    from htd_pipelines.store.snapshots import SnapshotStore

    out: dict = {
        "dialect": dialect,
        "rows_requested": rows_requested,
        "repeat": args.repeat,
        "key_id": KEY_ID,
        "variants": list(VARIANTS),
    }
    t_total = time.perf_counter()
    keys_env = {crypto.KEYS_ENV: f"{KEY_ID}:{crypto.new_key()}", crypto.KEY_ID_ENV: None}
    with (
        common.scratch_database(dialect) as url,
        common.temp_workdir() as work,
        environment(keys_env),
    ):
        log(f"{dialect}: seeding {rows_requested:,} rows into {url.rsplit('/', 1)[-1]} ...")
        seeded = common.seed_session_any(url, rows_requested)
        out["seed_s"] = seeded.seconds
        out["session_id"] = seeded.session_id
        engine = get_engine(url)
        rtype = common.resolve_demo_type(engine, TYPE_NAME)
        registry = load_registry(str(settings.DEMO_RELATIONS_FILE))
        sid = seeded.session_id
        ids = [sid]
        stores = {v: make_store(work, v) for v in VARIANTS}
        catalog.ensure_catalog(engine)  # settle() vacuums back_up before the first backup
        per_table = owned_counts(engine, rtype, ids)
        for name, n in seeded.counts.items():
            if per_table.get(name) != n:
                raise SystemExit(f"seeded {name}: {per_table.get(name)} rows, expected {n:,}")
        expected = sum(per_table.values())  # the seeded rows + the process_session row
        out["rows"], out["rows_per_table"] = expected, per_table

        # -- backup: warm-up (the restore sources), then interleaved timed rounds
        log(f"{dialect}: backup_sessions (keep_source), warm-up + {args.repeat} x {VARIANTS} ...")
        sources, warmup = {}, {}
        for v in VARIANTS:
            recorded, run = timed_backup(
                engine, registry, stores[v], url, rtype, sid, f"bench-enc-warm-{v}", args
            )
            check_backup(stores[v], recorded, v)
            if run["rows"] != expected:
                raise SystemExit(f"{v} backup captured {run['rows']:,} rows, not {expected:,}")
            sources[v], warmup[v] = recorded, run
        backups: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for i in range(args.repeat):
            for v in VARIANTS:
                recorded, run = timed_backup(
                    engine, registry, stores[v], url, rtype, sid, f"bench-enc-{v}-{i}", args
                )
                if run["rows"] != expected:
                    raise SystemExit(f"{v} backup captured {run['rows']:,} rows, not {expected:,}")
                stores[v].delete_dir(recorded.location)  # keep the disk use flat
                backups[v].append(run)
        out["backup_warmup"] = warmup
        out["backup"] = {v: _summary(backups[v]) for v in VARIANTS}
        out["snapshot_bytes"] = {v: sources[v].bytes for v in VARIANTS}
        out["backup_ids"] = {v: sources[v].backup_id for v in VARIANTS}

        # -- restore: refused while the rows exist, then interleaved timed rounds
        log(f"{dialect}: restore refused while the rows exist (key conflicts) ...")
        t0 = time.perf_counter()
        try:
            restore_backup(
                engine,
                registry,
                sources["plain"].backup_id,
                uid="bench",
                run_id="bench-enc-conflict",
            )
        except RestoreRefused as exc:
            out["conflict_check"] = {"refused": True, "message": str(exc)[:300]}
        else:
            raise SystemExit("restore_backup did not refuse while the session's rows exist")
        out["conflict_check"]["seconds"] = time.perf_counter() - t0
        reset_restore(engine, rtype, ids, None)

        log(f"{dialect}: restore_backup, {args.repeat} x {VARIANTS} ...")
        restores: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for i in range(args.repeat):
            for v in VARIANTS:
                run = timed_restore(
                    engine,
                    registry,
                    url,
                    rtype,
                    ids,
                    sources[v].backup_id,
                    f"bench-enc-restore-{v}-{i}",
                    args,
                )
                if run["rows"] != expected:
                    raise SystemExit(f"{v} restore wrote {run['rows']:,} rows, not {expected:,}")
                restores[v].append(run)
        out["restore"] = {v: _summary(restores[v]) for v in VARIANTS}
        for v in VARIANTS:
            peaks = [r["peak_rss_mb"] for r in restores[v] if r["peak_rss_mb"] is not None]
            out["restore"][v]["peak_rss_mb"] = max(peaks) if peaks else None

        # -- load_snapshot and the files alone, on the restore sources
        log(f"{dialect}: load_snapshot and read+sha256(+decrypt), {args.repeat} x {VARIANTS} ...")
        manifests = {v: manifest_of(stores[v], sources[v]) for v in VARIANTS}
        readers = {v: SnapshotStore(manifests[v].snapshot_uri) for v in VARIANTS}
        loads: dict[str, list[float]] = {v: [] for v in VARIANTS}
        reads: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeat):
            for v in VARIANTS:
                gc.collect()
                t0 = time.perf_counter()
                tables = load_snapshot(readers[v], manifests[v])
                loads[v].append(time.perf_counter() - t0)
                if sum(t.num_rows for t in tables.values()) != expected:
                    raise SystemExit(f"{v} load_snapshot read the wrong number of rows")
                del tables
                gc.collect()
                reads[v].append(read_files(readers[v], manifests[v]))
        out["load_snapshot"] = {v: {"best_s": min(loads[v]), "all_s": loads[v]} for v in VARIANTS}
        out["read_files"] = {v: {"best_s": min(reads[v]), "all_s": reads[v]} for v in VARIANTS}
        dispose_engines()

    for part in ("backup", "restore"):
        per_s = {v: out[part][v]["rows_per_s"] for v in VARIANTS}
        out[f"ratio_{part}"] = per_s["encrypted"] / per_s["plain"]
    out["total_s"] = time.perf_counter() - t_total
    return out


def _summary(runs: list[dict]) -> dict:
    best = min(runs, key=lambda r: r["wall_s"])
    return {
        "rows": best["rows"],
        "best_s": best["wall_s"],
        "all_s": [r["wall_s"] for r in runs],
        "rows_per_s": best["rows"] / best["wall_s"],
        "client_cpu_best_s": min(r["cpu"]["client_s"] for r in runs),
        "runs": runs,
    }


# ---------------------------------------------------------------------------- report


def report(r: dict) -> bool:
    b, s = r["backup"], r["restore"]
    ls, rf = r["load_snapshot"], r["read_files"]
    size = r["snapshot_bytes"]
    ok_ratio = (lambda v: v >= TARGET_RATIO), f">= {TARGET_RATIO}"
    rows = [
        Row("rows per backup / restore (all tables)", r["rows"]),
        Row("backup rows/s, plain", b["plain"]["rows_per_s"]),
        Row("backup rows/s, encrypted", b["encrypted"]["rows_per_s"]),
        Row(
            "ratio backup encrypted / plain", r["ratio_backup"], "{:.3f}", ok_ratio[1], ok_ratio[0]
        ),
        Row("restore rows/s, plain", s["plain"]["rows_per_s"]),
        Row("restore rows/s, encrypted", s["encrypted"]["rows_per_s"]),
        Row(
            "ratio restore encrypted / plain",
            r["ratio_restore"],
            "{:.3f}",
            ok_ratio[1],
            ok_ratio[0],
        ),
        Row("snapshot MB, plain", size["plain"] / common.MB, "{:,.2f}"),
        Row("snapshot MB, encrypted", size["encrypted"] / common.MB, "{:,.2f}"),
        Row("  info: encryption overhead (bytes)", size["encrypted"] - size["plain"], "{:+,.0f}"),
        Row("load_snapshot s, plain (best)", ls["plain"]["best_s"], "{:.3f}"),
        Row("load_snapshot s, encrypted (best)", ls["encrypted"]["best_s"], "{:.3f}"),
        Row("  info: read+sha256 s, plain (no decode)", rf["plain"]["best_s"], "{:.4f}"),
        Row("  info: read+sha256+decrypt s, encrypted", rf["encrypted"]["best_s"], "{:.4f}"),
        Row("  info: backup client CPU s, plain", b["plain"]["client_cpu_best_s"], "{:.2f}"),
        Row(
            "  info: backup client CPU s, encrypted", b["encrypted"]["client_cpu_best_s"], "{:.2f}"
        ),
        Row("  info: restore client CPU s, plain", s["plain"]["client_cpu_best_s"], "{:.2f}"),
        Row(
            "  info: restore client CPU s, encrypted",
            s["encrypted"]["client_cpu_best_s"],
            "{:.2f}",
        ),
        Row("  info: restore peak RSS MB, plain", s["plain"]["peak_rss_mb"], "{:,.0f}"),
        Row("  info: restore peak RSS MB, encrypted", s["encrypted"]["peak_rss_mb"], "{:,.0f}"),
    ]
    ok = common.print_table(
        f"\nencryption benchmark: {r['rows']:,} rows, {r['dialect']}, best of {r['repeat']} "
        "(plain and encrypted interleaved)",
        rows,
    )

    def runs(d: dict) -> str:
        return ", ".join(f"{x:.2f}" for x in d["all_s"])

    print(
        f"  backup s: plain {runs(b['plain'])}; encrypted {runs(b['encrypted'])}\n"
        f"  restore s: plain {runs(s['plain'])}; encrypted {runs(s['encrypted'])}\n"
        f"  seed {r['seed_s']:.1f} s; total {r['total_s']:.1f} s"
    )
    common.print_quiet(
        [
            run["quiet"]
            for part in (b, s)
            for v in VARIANTS
            for run in part[v]["runs"]
            if run.get("quiet")
        ]
    )
    for v in VARIANTS:
        corrected = [run["corrected"] for run in s[v]["runs"] if run["corrected"]]
        if corrected:
            print(f"  note: {v} restore corrected cells after insert: {corrected[0]}")
    return ok


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common.dialect_parser(__doc__)
    p.add_argument(
        "--repeat", type=int, default=3, help="timed rounds (plain + encrypted; best is kept)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    return common.run_dialects(args, DEFAULT_ROWS, measure_dialect, report)


if __name__ == "__main__":
    sys.exit(main())
