"""Key rotation of stored backups and the check that their keys are available.

Keys come from the environment only (HTD_ENCRYPTION_KEYS, HTD_ENCRYPTION_KEY_ID); nothing here
prints, logs or stores key material, only key ids.

Rotation of one backup, safe to interrupt and to run again:
1. every file not yet under the target key is re-encrypted next to itself
   (``<file>.rotating``): streamed, read with whichever known key it has (or plain), checked
   against the manifest, then read back and checked under the target key;
2. one transaction updates the catalog row (the manifest's per-table sha256, bytes, key id;
   total bytes) only if the row is still the one read, and logs ``rotate_keys``;
3. each ``.rotating`` file replaces its original, then manifest.json is rewritten under the
   target key.
Interrupted before 2: the originals and the catalog are untouched (the leftover copies are
removed on the next run). Interrupted after 2: the next run finds copies that match the
catalog and puts them in place. A file already under the target key is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import BackupRecord
from htd_pipelines.store.crypto import KEY_ID_ENV, KEYS_ENV, KeyConfigError, Keyring
from htd_pipelines.store.manifest import MANIFEST_FILE, Manifest, StoredFile
from htd_pipelines.store.snapshots import ROTATE_SUFFIX, SnapshotError, SnapshotStore


@dataclass
class BackupRotation:
    backup_id: int
    backup: str  # "type relation_id vN"
    status: str  # rotated | up to date | would rotate | failed
    files: list[str] = field(default_factory=list)  # re-encrypted (or to re-encrypt)
    from_key_ids: list[str] = field(default_factory=list)  # "plain" for unencrypted files
    recovered: list[str] = field(
        default_factory=list
    )  # files an interrupted run left, put in place
    message: str = ""


def _label(record: BackupRecord) -> str:
    return f"{record.type} {record.relation_id} v{record.version}"


def _digest_or_none(store: SnapshotStore, path: str) -> tuple[str, int] | None:
    try:
        return store.file_digest(path)
    except SnapshotError:
        return None


def _finish_interrupted(store: SnapshotStore, manifest: Manifest, dry_run: bool) -> list[str]:
    """Copies left by an interrupted rotation: a copy matching the catalog (the run stopped
    after its commit) replaces its file; a copy whose original still matches the catalog (it
    stopped before) is removed. Anything else is left for the checks to report."""
    recovered = []
    for f in manifest.stored_files():
        path = f"{manifest.location}/{f.file}"
        tmp = path + ROTATE_SUFFIX
        if not store.exists(tmp):
            continue
        expected = (f.sha256, f.bytes)
        if _digest_or_none(store, path) == expected:
            if not dry_run:
                store.delete_file(tmp)
        elif _digest_or_none(store, tmp) == expected:
            recovered.append(f.file)
            if not dry_run:
                store.replace(tmp, path)
    if not dry_run:
        store.delete_file(f"{manifest.location}/{MANIFEST_FILE}{ROTATE_SUFFIX}")
    return recovered


def _manifest_file_current(store: SnapshotStore, location: str, text: str, key_id: str) -> bool:
    path = f"{location}/{MANIFEST_FILE}"
    try:
        return store.key_id_of(path) == key_id and store.read_plain(path) == text.encode()
    except SnapshotError:
        return False


def _write_manifest_file(store: SnapshotStore, location: str, text: str, key_id: str) -> None:
    path = f"{location}/{MANIFEST_FILE}"
    store.write_bytes(path + ROTATE_SUFFIX, text.encode(), key_id=key_id)
    store.replace(path + ROTATE_SUFFIX, path)


class _CatalogChanged(RuntimeError):
    pass


def _remove_copies(store: SnapshotStore, manifest: Manifest, files: list[StoredFile]) -> None:
    for f in files:
        store.delete_file(f"{manifest.location}/{f.file}{ROTATE_SUFFIX}")


def rotate_backup(
    engine: Engine,
    record: BackupRecord,
    keyring: Keyring,
    to_key_id: str,
    *,
    dry_run: bool = False,
    uid: str | None = None,
) -> BackupRotation:
    """Re-encrypt one backup's files under `to_key_id` (see the module docstring)."""
    manifest = record.manifest
    out = BackupRotation(record.id, _label(record), "up to date")
    try:
        store = SnapshotStore(manifest.snapshot_uri, keyring=keyring)
        out.recovered = _finish_interrupted(store, manifest, dry_run)
        todo = [f for f in manifest.stored_files() if not (f.encrypted and f.key_id == to_key_id)]
        out.files = [f.file for f in todo]
        out.from_key_ids = sorted({f.key_id if f.encrypted else "plain" for f in todo})
        if dry_run:
            missing = sorted({f.key_id for f in todo if f.encrypted and not keyring.has(f.key_id)})
            if todo:
                out.status = "would rotate"
            if missing:
                out.status = "failed"
                out.message = (
                    f"key id(s) {', '.join(missing)} not in {KEYS_ENV}: the files cannot be read"
                )
            return out
        if not todo:
            if not _manifest_file_current(
                store, manifest.location, record.manifest_json, to_key_id
            ):
                _write_manifest_file(store, manifest.location, record.manifest_json, to_key_id)
            return out
        new = Manifest.from_json(record.manifest_json)
        total_bytes = record.total_bytes
        try:
            for f in todo:
                sha256, size = store.reencrypt(f"{manifest.location}/{f.file}", f, to_key_id)
                new.set_stored(f, sha256, size, to_key_id)
                total_bytes += size - f.bytes
        except BaseException:
            _remove_copies(store, manifest, todo)
            raise
        new.encryption = store.encryption_info(to_key_id)
        text = new.to_json()
        try:
            with engine.begin() as conn:
                result = conn.execute(
                    catalog.back_up.update()
                    .where(
                        catalog.back_up.c.id == record.id,
                        catalog.back_up.c.manifest == record.manifest_json,
                    )
                    .values(manifest=text, total_bytes=total_bytes)
                )
                if result.rowcount != 1:
                    raise _CatalogChanged(
                        f"backup {record.id}: its catalog row changed meanwhile (another "
                        "rotation?); nothing was changed, run again"
                    )
                catalog.log_operation(
                    conn,
                    action="rotate_keys",
                    uid=uid,
                    type_name=record.type,
                    relation_ids=[record.relation_id],
                    backup_ids=[record.id],
                    counts={"files": len(todo)},
                    message=f"{len(todo)} file(s) re-encrypted from key id(s) "
                    f"{', '.join(out.from_key_ids)} to {to_key_id}",
                )
        except _CatalogChanged:
            _remove_copies(store, manifest, todo)
            raise
        # (any other failure of the transaction leaves the copies: whether it committed or not,
        # the next run resolves them against the catalog row)
        for f in todo:  # committed: the copies are the files now
            path = f"{manifest.location}/{f.file}"
            store.replace(path + ROTATE_SUFFIX, path)
        _write_manifest_file(store, manifest.location, text, to_key_id)
        out.status = "rotated"
    except (SnapshotError, _CatalogChanged) as exc:
        out.status, out.message = "failed", str(exc)
    return out


def rotate_keys(
    engine: Engine,
    *,
    to_key_id: str | None = None,
    type_name: str | None = None,
    dry_run: bool = False,
    keyring: Keyring | None = None,
    uid: str | None = None,
) -> list[BackupRotation]:
    """Rotate every backup (of `type_name`) to `to_key_id` (default HTD_ENCRYPTION_KEY_ID)."""
    keyring = keyring or Keyring.from_env()
    to_key_id = to_key_id or keyring.current_id
    if not to_key_id:
        raise KeyConfigError(f"no target key id: give --to KEY_ID or set {KEY_ID_ENV}")
    if not keyring.has(to_key_id):
        raise KeyConfigError(
            f"target key id {to_key_id!r} is not in {KEYS_ENV} "
            f"(key ids available: {', '.join(keyring.ids) or 'none'})"
        )
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        ids = conn.execute(
            sa.select(catalog.back_up.c.id)
            .where(*([catalog.back_up.c.type == type_name] if type_name else []))
            .order_by(catalog.back_up.c.id)
        ).scalars()
        ids = list(ids)
    results = []
    for backup_id in ids:  # one row at a time: manifests can be large
        with engine.connect() as conn:
            record = catalog.get_backup(conn, backup_id)
        results.append(rotate_backup(engine, record, keyring, to_key_id, dry_run=dry_run, uid=uid))
    return results


def check_keys(
    engine: Engine, *, type_name: str | None = None, keyring: Keyring | None = None
) -> list[dict]:
    """Per backup: the key ids it needs and those of them not available."""
    keyring = keyring or Keyring.from_env()
    catalog.ensure_catalog(engine)
    with engine.connect() as conn:
        records = catalog.find_backups(conn, type_name=type_name)
    out = []
    for r in sorted(records, key=lambda r: r.id):
        needed = sorted(r.manifest.key_ids())
        out.append(
            {
                "backup_id": r.id,
                "type": r.type,
                "relation_id": r.relation_id,
                "version": r.version,
                "key_ids": needed,
                "missing": [k for k in needed if not keyring.has(k)],
            }
        )
    return out
