"""CLI commands about incremental versions of live sessions: `versions list|backup|restore`."""

from __future__ import annotations

import argparse

from htd_pipelines import settings
from htd_pipelines.cli.output import print_json, table


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the htd-pipelines parser."""
    s = sub.add_parser("versions", help="versions of live sessions: list, back up, restore")
    versions = s.add_subparsers(dest="versions_command", required=True)

    c = versions.add_parser("list", help="every recorded version of a session, oldest first")
    c.add_argument("--type", required=True)
    c.add_argument("relation_id", metavar="ID")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_versions_list)

    c = versions.add_parser(
        "backup",
        help="run protective_backup_job: a new (incremental) version of live sessions",
        description="A full version for a session without one, else an incremental version "
        "on top of the latest; nothing when unchanged. Without IDs: every changed session.",
    )
    c.add_argument("--type", required=True)
    c.add_argument("relation_ids", nargs="*", metavar="ID")
    c.add_argument("--uid")
    c.add_argument("--max-sessions", type=int, help="without IDs: new versions at most")
    c.add_argument(
        "--differential",
        action="store_true",
        help="differential versions: every change since the full version, on top of it",
    )
    c.set_defaults(func=cmd_versions_backup)

    c = versions.add_parser(
        "restore",
        help="run restore_version_job: put a live session back to a recorded version",
        description="The current state is backed up first (a new version); then the session's "
        "rows are replaced by the version's in one transaction, read back and compared.",
    )
    c.add_argument("--type", required=True)
    c.add_argument("relation_id", metavar="ID")
    c.add_argument("--version", type=int, required=True)
    c.add_argument("--uid")
    c.set_defaults(func=cmd_versions_restore)


def cmd_versions_list(args: argparse.Namespace) -> int:
    from htd_pipelines.dialects.engine import get_engine
    from htd_pipelines.versions.chain import list_versions

    rows = list_versions(get_engine(settings.database_url()), args.type, args.relation_id)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no versions of {args.type} {args.relation_id}")
        return 0
    shown = [
        {
            **r,
            "base_version": r["base_version"] or "",
            "changes": ""
            if r["kind"] != "incremental"
            else f"+{r['added']} ~{r['changed']} -{r['deleted']}",
        }
        for r in rows
    ]
    cols = [
        "version",
        "backup_id",
        "kind",
        "base_version",
        "rows",
        "changes",
        "bytes",
        "created_at",
    ]
    print(table(shown, cols))
    return 0


def cmd_versions_backup(args: argparse.Namespace) -> int:
    from htd_pipelines.cli.launch import run_cli_job
    from htd_pipelines.jobs.incremental import PROTECTIVE_OP, protective_run_config
    from htd_pipelines.jobs.run_config import backup_tags

    result = run_cli_job(
        args,
        "protective_backup_job",
        protective_run_config(
            args.type, args.relation_ids, args.uid, args.max_sessions, args.differential
        ),
        tags=backup_tags(args.type, args.relation_ids, args.uid) if args.relation_ids else {},
    )
    print(f"run {result.run_id} succeeded")
    for o in result.output_for_node(PROTECTIVE_OP):
        line = f"{args.type} {o['relation_id']}: {o['status']}"
        if o["status"] == "incremental":
            if o.get("delta") == "differential":
                line = f"{args.type} {o['relation_id']}: differential"
            line += (
                f" version {o['version']} on top of {o['base_version']}, rows added "
                f"{sum(o['added'].values())}, changed {sum(o['changed'].values())}, deleted "
                f"{sum(o['deleted'].values())}, {o['bytes']} bytes (full: {o['full_bytes']})"
            )
        elif o["status"] == "full":
            line += f" version {o['version']}, {o['bytes']} bytes ({o['reason']})"
        else:
            line += f" (latest version {o['version']})"
        print(line)
    return 0


def cmd_versions_restore(args: argparse.Namespace) -> int:
    from htd_pipelines.cli.launch import run_cli_job
    from htd_pipelines.jobs.incremental import RESTORE_VERSION_OP, restore_version_run_config
    from htd_pipelines.registry.relation_ids import tag_value

    tags = {"htd/type": args.type, "htd/relation_id": tag_value(args.relation_id)}
    if args.uid:
        tags["htd/uid"] = args.uid
    result = run_cli_job(
        args,
        "restore_version_job",
        restore_version_run_config(args.type, args.relation_id, args.version, args.uid),
        tags=tags,
    )
    doc = result.output_for_node(RESTORE_VERSION_OP)
    p = doc["protective"]
    before = f"the state before is version {p['version']} ({p['status']})"
    if doc["restored"]:
        print(
            f"run {result.run_id} succeeded: {args.type} {args.relation_id} restored to version "
            f"{args.version} ({sum(doc['rows'].values())} rows); {before}"
        )
    else:
        print(
            f"run {result.run_id}: {args.type} {args.relation_id} is already at version "
            f"{args.version}; nothing changed"
        )
    return 0
