"""The session commands: `demo`, `backup` (back up and delete), `restore`, `request-restore`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from htd_pipelines import settings
from htd_pipelines.cli.launch import run_cli_job
from htd_pipelines.cli.output import print_json
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.jobs.run_config import backup_run_config, backup_tags, restore_run_config
from htd_pipelines.store import catalog

if TYPE_CHECKING:  # for the annotations only: a run imports Dagster when it starts
    from dagster import ExecuteInProcessResult


def register(sub: argparse._SubParsersAction) -> None:
    """Add the session commands to the htd-pipelines parser."""
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

    s = sub.add_parser("request-restore", help="ask restore_request_sensor to restore a backup")
    s.add_argument("backup_id", type=int, metavar="BACKUP_ID")
    s.add_argument("--uid")
    s.set_defaults(func=cmd_request_restore)


def cmd_backup(args: argparse.Namespace) -> int:
    result = run_cli_job(
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
    result = run_cli_job(
        args,
        "restore_job",
        restore_run_config(args.backup_id, args.uid, args.dry_run, args.target_env),
        tags={"htd/backup_id": str(args.backup_id), **({"htd/uid": args.uid} if args.uid else {})},
    )
    if args.dry_run:
        meta = step_metadata(result, "check_backup").get("preview")
        doc = meta.value if meta is not None else {}
        if args.json:
            print_json(doc)
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


def step_metadata(result: ExecuteInProcessResult, step: str) -> dict:
    for event in result.all_events:
        if event.step_key == step and event.is_successful_output:
            return dict(event.event_specific_data.metadata)
    return {}


def cmd_request_restore(args: argparse.Namespace) -> int:

    engine = get_engine(settings.database_url())
    catalog.ensure_catalog(engine)
    with engine.begin() as conn:
        record = catalog.request_restore(conn, args.backup_id, args.uid)
    print(
        f"restore of backup {record.id} ({record.type} {record.relation_id} v{record.version}) "
        f"requested at {record.restore_requested_at}; restore_request_sensor will launch it"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

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
