"""`htd-pipelines`: run the code location's jobs and read the catalog from a shell."""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import json
import re
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from htd_pipelines import settings
from htd_pipelines.registry import RegistryError


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def _print_json(doc: object) -> None:
    print(json.dumps(doc, default=_json_default, ensure_ascii=False, indent=2))


def _table(rows: list[dict], columns: Sequence[str]) -> str:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def check_database() -> None:
    """Connect to the application database once; raises the driver's error (named by `main`
    in one line) before a job starts, instead of a failed run logging its traceback."""
    from htd_pipelines.db import get_engine

    with get_engine(settings.database_url()).connect():
        pass


def run_job(args: argparse.Namespace, job_name: str, run_config: dict, **kw):  # noqa: ANN201
    """runner.run_job for a CLI command: the database checked first; Dagster's DEBUG events on
    stderr only with the global -v/--verbose."""
    from htd_pipelines import runner

    check_database()
    return runner.run_job(job_name, run_config, verbose=getattr(args, "verbose", False), **kw)


def cmd_backup(args: argparse.Namespace) -> int:
    from htd_pipelines.runner import backup_run_config, backup_tags

    result = run_job(
        args,
        "backup_job",
        backup_run_config(args.type, args.relation_ids, args.uid, args.keep_source),
        tags=backup_tags(args.type, args.relation_ids, args.uid),
    )
    recorded = result.output_for_node("record_backup")
    print(f"run {result.run_id} succeeded")
    for r in recorded:
        print(
            f"backup {r.backup_id}: {args.type} {r.relation_id} v{r.version}, "
            f"{sum(r.rows.values())} rows, {r.bytes} bytes"
            + ("" if args.keep_source else ", source rows deleted")
        )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from htd_pipelines.runner import restore_run_config

    result = run_job(
        args,
        "restore_job",
        restore_run_config(args.backup_id, args.uid, args.dry_run, args.target_env),
        tags={"htd/backup_id": str(args.backup_id), **({"htd/uid": args.uid} if args.uid else {})},
    )
    if args.dry_run:
        meta = _step_metadata(result, "check_backup").get("preview")
        doc = meta.value if meta is not None else {}
        if args.json:
            _print_json(doc)
        else:
            verdict = "would succeed" if doc.get("ok") else "would be refused"
            print(f"dry run of backup {args.backup_id}: the restore {verdict}")
            for table, n in doc.get("rows", {}).items():
                print(f"  {table}: {n} rows to insert")
            for key in ("conflicts", "missing_parents"):
                for table, keys in doc.get(key, {}).items():
                    print(f"  {key.replace('_', ' ')} in {table}: {keys}")
            for problem in doc.get("problems", []):
                print(f"  problem: {problem}")
        return 0 if doc.get("ok") else 3
    print(f"run {result.run_id} succeeded: backup {args.backup_id} restored")
    return 0


def _step_metadata(result, step: str) -> dict:  # noqa: ANN001
    for event in result.all_events:
        if event.step_key == step and event.is_successful_output:
            return dict(event.event_specific_data.metadata)
    return {}


def cmd_verify(args: argparse.Namespace) -> int:
    from htd_pipelines.jobs.verify import VERIFY_OP

    config: dict = {"backup_ids": args.backup_ids, "recheck_after_hours": args.recheck_after_hours}
    if args.full_restore_env:
        config["full_restore_env"] = args.full_restore_env
    result = run_job(
        args,
        "verify_backups_job",
        {"ops": {VERIFY_OP: {"config": config}}},
        tags={"htd/verify": ",".join(map(str, args.backup_ids)) or "due"},
    )
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    evaluation = checks[0]
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    print(
        f"run {result.run_id}: checked {meta['checked']}, skipped (recently verified) "
        f"{meta['skipped_recently_verified']}, failed {meta['failed']}"
    )
    for backup_id, message in (meta.get("failures") or {}).items():
        print(f"  backup {backup_id}: {message}")
    return 0 if evaluation.passed else 4


def cmd_prune(args: argparse.Namespace) -> int:
    result = run_job(
        args,
        "retention_job",
        {"ops": {"prune_backups": {"config": {"type": args.type, "dry_run": args.dry_run}}}},
        tags={"htd/retention": "dry-run" if args.dry_run else "prune"},
    )
    out = result.output_for_node("prune_backups")
    if args.dry_run:
        going = [d for d in out if d["prune"]]
        if args.json:
            _print_json(out)
            return 0
        print(f"dry run: {len(going)} backup(s) would be pruned, {len(out) - len(going)} kept")
        print(_table(out, ["backup_id", "type", "relation_id", "version", "prune", "reason"]))
    else:
        print(f"pruned {len(out)} backup(s): {', '.join(map(str, out)) or 'none'}")
    return 0


def cmd_request_restore(args: argparse.Namespace) -> int:
    from htd_pipelines import catalog
    from htd_pipelines.db import get_engine

    engine = get_engine(settings.database_url())
    catalog.ensure_catalog(engine)
    with engine.begin() as conn:
        record = catalog.request_restore(conn, args.backup_id, args.uid)
    print(
        f"restore of backup {record.id} ({record.type} {record.relation_id} v{record.version}) "
        f"requested at {record.restore_requested_at}; restore_request_sensor will launch it"
    )
    return 0


def cmd_backups(args: argparse.Namespace) -> int:
    from htd_pipelines.api import list_backups

    records = [r.summary() for r in list_backups(args.type, args.relation_id, limit=args.limit)]
    if args.json:
        _print_json(records)
    else:
        cols = [
            "id",
            "type",
            "relation_id",
            "version",
            "rows",
            "bytes",
            "is_reback",
            "uid",
            "created_at",
        ]
        print(_table(records, cols) if records else "no backups")
    return 0


def _composed_version(record, store) -> tuple[dict, list[dict], list[int]]:  # noqa: ANN001
    """An incremental or differential version as api.load_backup reads it: the session's
    state at that version (incremental.compose of its chain, full version first), with the
    remote files of those rows, and the chain's versions."""
    import pandas as pd
    import pyarrow.compute as pc

    from htd_pipelines.db import get_engine
    from htd_pipelines.incremental import compose, version_chain

    with get_engine(settings.database_url()).connect() as conn:
        chain = version_chain(conn, record.type, record.relation_id, record.version)
    state = compose(chain, store)  # what incremental.compose_version returns
    refs: dict[tuple[str, str], list[str]] = {}  # (table, file column) -> key columns
    for link in chain:
        for t in link.manifest.tables:
            for ref in t.files:
                refs.setdefault((t.table, ref["column"]), list(ref["key_columns"]))
    files = []
    for (table, column), key in refs.items():
        rows = state[table].filter(pc.is_valid(state[table].column(column)))
        keys = [rows.column(c).to_pylist() for c in key]
        for i, url in enumerate(rows.column(column).to_pylist()):
            files.append(
                {
                    "table": table,
                    "column": column,
                    "key": {c: k[i] for c, k in zip(key, keys, strict=True)},
                    "url": url,
                }
            )
    frames = {name: t.to_pandas(types_mapper=pd.ArrowDtype) for name, t in state.items()}
    return frames, files, [link.version for link in chain]


def cmd_show(args: argparse.Namespace) -> int:
    from htd_pipelines.api import find_backup, read_tables
    from htd_pipelines.snapshots import SnapshotStore

    record = find_backup(args.type, args.relation_id, args.version)
    manifest = record.manifest
    store = SnapshotStore(manifest.snapshot_uri)
    chain = [record.version]
    if manifest.kind == "full":
        frames = read_tables(manifest, store)
        files = manifest.remote_files()
    else:  # the session's state at this version, not just the changes its files hold
        frames, files, chain = _composed_version(record, store)
    if args.json:
        _print_json(
            {
                "backup": record.summary(),
                "manifest": {
                    "kind": manifest.kind,
                    "base_version": manifest.base_version,
                    "chain": chain,
                    "location": manifest.location,
                    "snapshot_uri": manifest.snapshot_uri,
                    "registry_sha256": manifest.registry_sha256,
                    "remote_files": files,
                },
                "tables": {
                    name: [
                        {k: (None if _isna(v) else v) for k, v in row.items()}
                        for row in df.to_dict(orient="records")
                    ]
                    for name, df in frames.items()
                },
            }
        )
        return 0
    s = record.summary()
    print(
        f"backup {s['id']}: type {s['type']} relation {s['relation_id']} version {s['version']} "
        f"(uid {s['uid']}, created {s['created_at']}, is_reback {s['is_reback']})"
    )
    print(f"snapshots: {manifest.snapshot_uri}/{manifest.location}")
    if manifest.kind == "full":
        rows = [
            {"table": t.table, "rows": t.rows, "bytes": t.bytes, "sha256": t.sha256[:16]}
            for t in manifest.tables
        ]
        print(_table(rows, ["table", "rows", "bytes", "sha256"]))
    else:
        delta = manifest.delta or "incremental"
        print(
            f"{delta} version on top of version {manifest.base_version} "
            f"(chain {' -> '.join(map(str, chain))}); rows: the session at version "
            f"{record.version}; changes: what this version's files hold"
        )
        changes = {
            t.table: f"+{t.added_rows} ~{t.changed_rows} -{t.deleted_rows}" for t in manifest.tables
        }
        rows = [
            {"table": name, "rows": len(df), "changes": changes.get(name, "unchanged")}
            for name, df in frames.items()
        ]
        print(_table(rows, ["table", "rows", "changes"]))
    if files:
        print(f"remote files ({len(files)}):")
        for ref in files:
            print(f"  {ref['table']}.{ref['column']} {ref['key']}: {ref['url']}")
    return 0


def _isna(value: object) -> bool:
    try:
        import pandas as pd

        return value is None or (not isinstance(value, list | dict) and bool(pd.isna(value)))
    except (TypeError, ValueError):
        return False


def cmd_relations_check(args: argparse.Namespace) -> int:
    from htd_pipelines.db import get_engine
    from htd_pipelines.plan import resolve_type
    from htd_pipelines.registry import load_registry

    registry = load_registry(settings.relations_file())
    engine = get_engine(settings.database_url())
    print(f"registry {registry.path} against {engine.url.render_as_string(hide_password=True)}")
    for name, btype in registry.types.items():
        resolved = resolve_type(engine, btype, registry.path)
        print(f"\ntype {name} (registry sha256 {btype.digest()[:16]}): insert order, parents first")
        rows = [
            {
                **t,
                "op": f"extract_{t['table'].replace('.', '__')}",
                "primary_key": ",".join(t["primary_key"]),
                "files": ",".join(t["files"]),
            }
            for t in resolved.describe()
        ]
        print(_table(rows, ["table", "key", "parent", "parent_key", "primary_key", "files", "op"]))
        print("delete order: " + " -> ".join(t.name for t in reversed(resolved.tables)))
    print("\nok")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from htd_pipelines.db import get_engine
    from htd_pipelines.demo.schema import create_demo_schema, metadata
    from htd_pipelines.demo.seed import seed_demo, seed_legacy_crontab

    url = settings.database_url()
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = get_engine(url)
    create_demo_schema(engine)
    seed_legacy_crontab(engine)
    ids = seed_demo(engine, args.sessions, seed=args.seed)
    print(f"seeded {len(ids)} sessions into {engine.url.render_as_string(hide_password=True)}")
    root = metadata.tables["process_session"]
    with engine.connect() as conn:
        live = (
            conn.execute(sa.select(root.c.id).where(root.c.id.in_(ids), root.c.is_test.is_(False)))
            .scalars()
            .all()
        )
    chosen = sorted(live)[: args.backup]
    args.type, args.relation_ids, args.keep_source = "inst", chosen, False
    rc = cmd_backup(args)
    print(
        f"\nsnapshots under {settings.snapshot_uri()}; try: htd-pipelines show --type inst "
        f"{chosen[0]}"
    )
    return rc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="htd-pipelines",
        description="Back up, delete and restore htdNew sessions (Dagster jobs on the "
        "configured instance). Environment: HTD_DATABASE_URL, HTD_RELATIONS_FILE, "
        "HTD_SNAPSHOT_URI, DAGSTER_HOME.",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the runs' Dagster events (DEBUG) on stderr; by default only warnings "
        "and errors, the summary on stdout",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="seed the demo database, back up and delete a few sessions")
    s.add_argument("--sessions", type=int, default=20)
    s.add_argument("--backup", type=int, default=3, help="how many sessions to back up")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--uid", default="demo")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("backup", help="run backup_job for one or more sessions")
    s.add_argument("--type", required=True)
    s.add_argument("relation_ids", nargs="+", metavar="ID")
    s.add_argument("--uid")
    s.add_argument("--keep-source", action="store_true")
    s.set_defaults(func=cmd_backup)

    s = sub.add_parser("restore", help="run restore_job for one backup (by catalog id)")
    s.add_argument("backup_id", type=int, metavar="BACKUP_ID")
    s.add_argument("--uid")
    s.add_argument("--dry-run", action="store_true", help="preview only; write nothing")
    s.add_argument(
        "--target-env",
        help="name of an environment variable holding the URL of another database to "
        "restore into (a staging copy; the catalog is not claimed)",
    )
    s.add_argument("--json", action="store_true", help="with --dry-run: the preview as JSON")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("verify", help="run verify_backups_job (all due backups, or the ids)")
    s.add_argument("backup_ids", type=int, nargs="*", metavar="BACKUP_ID")
    s.add_argument("--recheck-after-hours", type=float, default=24.0)
    s.add_argument(
        "--full-restore-env",
        help="variable holding a scratch database URL: test-restore each backup there",
    )
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("prune", help="run retention_job (apply the retention policies)")
    s.add_argument("--type")
    s.add_argument("--dry-run", action="store_true", help="show what would go; remove nothing")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser("request-restore", help="ask restore_request_sensor to restore a backup")
    s.add_argument("backup_id", type=int, metavar="BACKUP_ID")
    s.add_argument("--uid")
    s.set_defaults(func=cmd_request_restore)

    s = sub.add_parser("backups", help="list backups in the catalog")
    s.add_argument("--type")
    s.add_argument("--relation-id")
    s.add_argument("--limit", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_backups)

    s = sub.add_parser("show", help="show one backup (newest version unless --version)")
    s.add_argument("--type", required=True)
    s.add_argument("relation_id")
    s.add_argument("--version", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("relations", help="the relation registry")
    rel = s.add_subparsers(dest="relations_command", required=True)
    c = rel.add_parser("check", help="validate against the live schema; print the plan")
    c.set_defaults(func=cmd_relations_check)

    from htd_pipelines import cli_keys, cli_schedules, cli_versions

    for module in (cli_schedules, cli_versions, cli_keys):  # each adds its own subcommands
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from htd_pipelines.backup import BackupError
    from htd_pipelines.catalog import CatalogError
    from htd_pipelines.restore import RestoreRefused
    from htd_pipelines.runner import JobFailed
    from htd_pipelines.snapshots import SnapshotError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except JobFailed as exc:
        print(f"error: run {exc.run_id} failed: {exc}", file=sys.stderr)
        return 1
    except (RegistryError, BackupError, CatalogError, SnapshotError, RestoreRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:  # the database is unreachable, refuses us, or the SQL failed
        print(f"error: {database_error(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a snapshot store or file that cannot be reached or read
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 1


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")


def _one_line(text: str) -> str:
    """A message on one line, any password of a URL in it hidden."""
    return _URL_PASSWORD.sub(r"\1***@", " ".join(text.split()))


def database_error(exc: SQLAlchemyError) -> str:
    """One line for a database error: the driver's own message (without SQLAlchemy's SQL echo
    and help link) and the configured database, passwords hidden."""
    from sqlalchemy.engine import make_url

    orig = getattr(exc, "orig", None)  # the driver's exception (DBAPIError)
    reason = str(orig) if orig is not None else str(exc).split("\n(Background on this error")[0]
    reason = _one_line(reason)
    try:
        configured = make_url(settings.database_url())
    except SQLAlchemyError:  # the URL itself is what is wrong; never print it (a password?)
        where = "not a valid SQLAlchemy URL"
    else:
        if configured.password and len(configured.password) >= 4:
            reason = reason.replace(configured.password, "***")
        where = configured.render_as_string(hide_password=True)
    kind = type(orig or exc).__name__
    return f"database error ({kind}): {reason} [{settings.DATABASE_URL_ENV}: {where}]"


if __name__ == "__main__":
    sys.exit(main())
