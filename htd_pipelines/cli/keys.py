"""`htd-pipelines keys`: rotate the encryption key of stored backups, check keys are available.

Keys come from the environment only (HTD_ENCRYPTION_KEYS, HTD_ENCRYPTION_KEY_ID); nothing here
prints, logs or stores key material, only key ids.
"""

from __future__ import annotations

import argparse
import json
import sys

import sqlalchemy as sa

from htd_pipelines import settings
from htd_pipelines.cli.output import error
from htd_pipelines.dialects.engine import get_engine
from htd_pipelines.store.crypto import KEY_ID_ENV, KEYS_ENV, KeyConfigError, Keyring
from htd_pipelines.store.keys import check_keys, rotate_keys

KEYS_CHECK_FAILED = 4  # like `verify`: the check ran and found backups it cannot read


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `keys` subcommands to the htd-pipelines parser."""
    s = sub.add_parser("keys", help="encryption keys of the snapshot files (rotate, check)")
    keys = s.add_subparsers(dest="keys_command", required=True)
    r = keys.add_parser(
        "rotate",
        help="re-encrypt backups' snapshot files under one key id",
        description="Re-encrypt every snapshot file (and manifest.json) not yet under the target "
        f"key id: read with any key of {KEYS_ENV}, write a verified copy alongside, update the "
        "catalog in one transaction, then replace the files. Plain (unencrypted) backups are "
        "encrypted too. Safe to interrupt and run again.",
    )
    r.add_argument("--to", metavar="KEY_ID", help=f"target key id (default: ${KEY_ID_ENV})")
    r.add_argument("--type", help="only backups of this type")
    r.add_argument("--dry-run", action="store_true", help="list what would be re-encrypted")
    r.set_defaults(func=cmd_keys_rotate)

    c = keys.add_parser(
        "check",
        help="list backups whose key ids are not available",
        description=f"Every backup whose files need a key id that is not in {KEYS_ENV} "
        f"(exit status {KEYS_CHECK_FAILED} when there is one).",
    )
    c.add_argument("--type", help="only backups of this type")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_keys_check)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    try:
        keyring = Keyring.from_env()
        results = rotate_keys(
            get_engine(settings.database_url()),
            to_key_id=args.to,
            type_name=args.type,
            dry_run=args.dry_run,
            keyring=keyring,
        )
    except KeyConfigError as exc:
        return error(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        return error(f"the catalog database failed: {exc.__class__.__name__}: {cause}")
    target = args.to or keyring.current_id
    for r in results:
        line = f"backup {r.backup_id} ({r.backup}): {r.status}"
        if r.files and r.status in ("rotated", "would rotate"):
            line += f", {len(r.files)} file(s) from {', '.join(r.from_key_ids)} to {target}"
        if r.recovered:
            line += f" (finished an interrupted rotation: {', '.join(r.recovered)})"
        if r.message:
            line += f": {r.message}"
        print(line)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no backups"
    print(("dry run: " if args.dry_run else "") + summary)
    if keyring.current_id and target != keyring.current_id:
        print(
            f"note: new backups are still encrypted with {keyring.current_id} "
            f"({KEY_ID_ENV}); set it to {target} to match",
            file=sys.stderr,
        )
    return 1 if counts.get("failed") else 0


def cmd_keys_check(args: argparse.Namespace) -> int:
    try:
        keyring = Keyring.from_env()
    except KeyConfigError as exc:
        return error(str(exc))
    rows = check_keys(get_engine(settings.database_url()), type_name=args.type, keyring=keyring)
    unreadable = [r for r in rows if r["missing"]]
    if args.json:
        print(json.dumps({"available": keyring.ids, "backups": unreadable}, indent=2))
        return KEYS_CHECK_FAILED if unreadable else 0
    in_use: dict[str, int] = {}
    for r in rows:
        for k in r["key_ids"]:
            in_use[k] = in_use.get(k, 0) + 1
    plain = sum(1 for r in rows if not r["key_ids"])
    print(
        f"{len(rows)} backup(s): {plain} not encrypted; key ids in use: "
        + (", ".join(f"{k} ({n})" for k, n in sorted(in_use.items())) or "none")
        + f"; available in {KEYS_ENV}: {', '.join(keyring.ids) or 'none'}"
    )
    for r in unreadable:
        print(
            f"backup {r['backup_id']} ({r['type']} {r['relation_id']} v{r['version']}): "
            f"key id(s) {', '.join(r['missing'])} not available"
        )
    if not unreadable:
        print("every backup can be read with the keys available")
    return KEYS_CHECK_FAILED if unreadable else 0
