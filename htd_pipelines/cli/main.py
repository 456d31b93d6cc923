"""`htd-pipelines`: run the code location's jobs and read the catalog from a shell.

Each command group registers its own subcommands (sessions, catalog, schedules, versions,
keys); this module builds the parser and turns the errors users can act on into one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from htd_pipelines.backup import BackupError
from htd_pipelines.cli import catalog, keys, schedules, sessions, versions
from htd_pipelines.cli.launch import JobFailed
from htd_pipelines.cli.output import database_error, one_line
from htd_pipelines.registry.spec import RegistryError
from htd_pipelines.restore import RestoreRefused
from htd_pipelines.store.catalog import CatalogError
from htd_pipelines.store.snapshots import SnapshotError


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

    for group in (sessions, catalog, schedules, versions, keys):  # each adds its subcommands
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
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
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
