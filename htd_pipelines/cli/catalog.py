"""The catalog commands: `backups`, `show`, `verify`, `prune`, `relations check`."""

from __future__ import annotations

import argparse
import sys

from htd_pipelines import settings
from htd_pipelines.cli.launch import run_cli_job
from htd_pipelines.cli.output import print_json, table
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.registry.resolved import resolve_type
from htd_pipelines.registry.spec import RegistryError, load_registry
from htd_pipelines.store.snapshots import SnapshotStore


def register(sub: argparse._SubParsersAction) -> None:
    """Add the catalog commands to the htd-pipelines parser."""
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


def cmd_verify(args: argparse.Namespace) -> int:
    config: dict = {"backup_ids": args.backup_ids, "recheck_after_hours": args.recheck_after_hours}
    if args.full_restore_env:
        config["full_restore_env"] = args.full_restore_env
    from htd_pipelines.jobs.verify import VERIFY_OP  # Dagster: imported when a run starts

    result = run_cli_job(
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
    result = run_cli_job(
        args,
        "retention_job",
        {"ops": {"prune_backups": {"config": {"type": args.type, "dry_run": args.dry_run}}}},
        tags={"htd/retention": "dry-run" if args.dry_run else "prune"},
    )
    out = result.output_for_node("prune_backups")
    if args.dry_run:
        going = [d for d in out if d["prune"]]
        if args.json:
            print_json(out)
            return 0
        print(f"dry run: {len(going)} backup(s) would be pruned, {len(out) - len(going)} kept")
        print(table(out, ["backup_id", "type", "relation_id", "version", "prune", "reason"]))
    else:
        print(f"pruned {len(out)} backup(s): {', '.join(map(str, out)) or 'none'}")
    return 0


def cmd_backups(args: argparse.Namespace) -> int:
    from htd_pipelines import api  # pandas: imported when a command reads backups

    records = [r.summary() for r in api.list_backups(args.type, args.relation_id, limit=args.limit)]
    if args.json:
        print_json(records)
    else:
        cols = [
            "id",
            "type",
            "relation_id",
            "version",
            "rows",
            "bytes",
            "state",
            "uid",
            "created_at",
        ]
        print(table(records, cols) if records else "no backups")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from htd_pipelines import api

    record = api.find_backup(args.type, args.relation_id, args.version)
    manifest = record.manifest
    store = SnapshotStore(manifest.snapshot_uri)
    chain = [record.version]
    if manifest.kind == "full":
        frames = api.read_tables(manifest, store)
        files = manifest.remote_files()
    else:  # the session's state at this version, not just the changes its files hold
        frames, files, chain = api.composed_version(record, store)
    if args.json:
        print_json(
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
        f"(uid {s['uid']}, created {s['created_at']}, {s['state']})"
    )
    print(f"snapshots: {manifest.snapshot_uri}/{manifest.location}")
    if manifest.kind == "full":
        rows = [
            {"table": t.table, "rows": t.rows, "bytes": t.bytes, "sha256": t.sha256[:16]}
            for t in manifest.tables
        ]
        print(table(rows, ["table", "rows", "bytes", "sha256"]))
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
        print(table(rows, ["table", "rows", "changes"]))
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
    registry = load_registry(settings.relations_file())
    engine = get_engine(settings.database_url())
    print(f"registry {registry.path} against {engine.url.render_as_string(hide_password=True)}")
    failed = 0
    for name, btype in registry.types.items():
        try:
            resolved = resolve_type(engine, btype, registry.path)
        except RegistryError as exc:  # one line per type at fault; the other types still checked
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
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
        print(table(rows, ["table", "key", "parent", "parent_key", "primary_key", "files", "op"]))
        print("delete order: " + " -> ".join(t.name for t in reversed(resolved.tables)))
    if failed:
        return 1
    print("\nok")
    return 0
