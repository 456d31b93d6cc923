"""What the proof before the delete costs: backup + delete with it against the same without it.

    .venv/bin/python benchmarks/bench_proof.py [--rows 1000000] [--dialect both] [--json out.json]

For each dialect (PostgreSQL, MariaDB), a scratch database gets the demo schema and one session
of ``--rows`` rows (``seed_large_session``). Then, in this order, on the same rows:

0. A warm-up backup with ``keep_source`` (caches, connection pools), not timed.
1. **Without the proof** (the reference, measured in the same run): the backup with
   ``keep_source`` (plan, every extract, record: ``backup.*``), then a key-checked delete of the
   session's rows in one transaction, children first (``DELETE ... WHERE <owned>``: what a
   delete costs when nothing is checked). The backup is then restored to put the rows back.
2. **With the proof** (the product): the same backup, then ``delete.delete_source``: ``DELETE
   ... RETURNING`` every value compared with the snapshot, the restore rehearsed in a
   savepoint and rolled back, then the commit.

ratio = (backup + delete with proof) / (backup + key-checked delete); the target is <= 3.0.
The small-session throughput with the proof on is measured by bench_daemon.py (>= 1,000
sessions/min end to end).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Row, log  # noqa: E402

TYPE_NAME = "inst"
TARGET_RATIO = 3.0


def _backup(engine, registry, store, sid: int, run_id: str, *, keep_source: bool):  # noqa: ANN001, ANN202
    from htd_pipelines import backup

    plan = backup.plan_backup(
        engine, registry, store, type_name=TYPE_NAME, relation_ids=[sid], uid="bench",
        keep_source=keep_source, run_id=run_id,
    )  # fmt: skip
    tables = [t.name for t in backup.resolved(engine, registry, TYPE_NAME, run_id).tables]
    extracts = [backup.extract_table(engine, registry, store, plan, t) for t in tables]
    return plan, backup.record_backup(engine, registry, store, plan, extracts)


def _plain_delete(engine, rtype, sid: int) -> int:  # noqa: ANN001
    """The delete as it was before the proof: children first, `DELETE ... RETURNING` the keys
    only, their digest compared with the captured keys' (here: computed, as it was)."""
    import pyarrow as pa
    import sqlalchemy as sa

    from htd_pipelines.backup import pk_digest

    deleted = 0
    with engine.begin() as conn:
        for tplan in reversed(rtype.tables):
            pk = [tplan.table.c[c] for c in tplan.primary_key]
            stmt = sa.delete(tplan.table).where(tplan.where_owned()).returning(*pk)
            rows = conn.execute(stmt, {"ids": [sid]}).fetchall()
            names = tplan.primary_key
            keys = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows])
            pk_digest(keys)
            deleted += len(rows)
    return deleted


def measure(dialect: str, rows: int) -> dict:
    from htd_pipelines import delete, restore
    from htd_pipelines.dialects.engine import get_engine
    from htd_pipelines.registry.spec import load_registry
    from htd_pipelines.store.snapshots import SnapshotStore

    out: dict = {"dialect": dialect}
    with common.scratch_database(dialect) as url, common.temp_workdir() as work:
        log(f"{dialect}: seeding {rows:,} rows ...")
        seeded = common.seed_session_any(url, rows)
        sid = seeded.session_id
        env = common.htd_environment(url, work)
        engine = get_engine(url)
        store = SnapshotStore(env["HTD_SNAPSHOT_URI"])
        registry = load_registry(env["HTD_RELATIONS_FILE"])
        rtype = common.resolve_demo_type(engine, TYPE_NAME)

        log(f"{dialect}: warm-up backup (keep_source, discarded) ...")
        _backup(engine, registry, store, sid, "bench-warm-up", keep_source=True)
        log(f"{dialect}: without the proof: backup (keep_source) + key-checked delete ...")
        t0 = time.perf_counter()
        _, recorded = _backup(engine, registry, store, sid, "bench-plain", keep_source=True)
        t1 = time.perf_counter()
        out["rows"] = _plain_delete(engine, rtype, sid)
        t2 = time.perf_counter()
        out["plain"] = {"backup_s": t1 - t0, "delete_s": t2 - t1, "total_s": t2 - t0}
        log(f"{dialect}: putting the rows back (restore) ...")
        restore.restore_backup(engine, registry, recorded[0].backup_id, uid="bench", run_id="r")
        if dialect == "postgresql":
            common.pg_settle(url, [t.name for t in rtype.tables])

        log(f"{dialect}: with the proof: backup + delete_source ...")
        t0 = time.perf_counter()
        plan, recorded = _backup(engine, registry, store, sid, "bench-proof", keep_source=False)
        t1 = time.perf_counter()
        counts = delete.delete_source(engine, registry, store, plan, recorded)
        t2 = time.perf_counter()
        if sum(counts.values()) != out["rows"]:
            raise SystemExit(f"row mismatch: {sum(counts.values())} vs {out['rows']}")
        out["proof"] = {"backup_s": t1 - t0, "delete_s": t2 - t1, "total_s": t2 - t0}
        out["ratio"] = out["proof"]["total_s"] / out["plain"]["total_s"]
        out["delete_ratio"] = out["proof"]["delete_s"] / out["plain"]["delete_s"]
        engine.dispose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dialect", choices=["postgresql", "mariadb", "both"], default="both")
    parser.add_argument("--json")
    args = parser.parse_args()
    dialects = ["postgresql", "mariadb"] if args.dialect == "both" else [args.dialect]
    results, ok = [], True
    for dialect in dialects:
        r = measure(dialect, args.rows)
        results.append(r)
        ok &= common.print_table(
            f"{dialect}: backup + delete of one {r['rows']:,}-row session, proof on vs off",
            [
                Row("backup, no proof (s)", r["plain"]["backup_s"], "{:.2f}"),
                Row("key-checked delete (s)", r["plain"]["delete_s"], "{:.2f}"),
                Row("backup, proof run (s)", r["proof"]["backup_s"], "{:.2f}"),
                Row("delete with proof (s)", r["proof"]["delete_s"], "{:.2f}"),
                Row("delete ratio (proof / without)", r["delete_ratio"], "{:.2f}"),
                Row(
                    "backup+delete ratio (proof / without)", r["ratio"], "{:.2f}",
                    f"<= {TARGET_RATIO}", lambda v: v <= TARGET_RATIO,
                ),
            ],
        )  # fmt: skip
    if args.json:
        common.write_json(args.json, {"results": results})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
