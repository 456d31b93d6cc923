"""The manifest of one backup: what was captured, how to check it, and how to read it back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class TableManifest:
    table: str
    file: str  # relative to the backup's folder
    rows: int
    bytes: int
    sha256: str
    key: str
    parent: str | None
    primary_key: list[str]
    pk_digest: str
    columns: list[dict]  # name, arrow_type, sql_type, nullable, kind
    # remote-file references, per file column: {column, key_columns, keys, urls}
    files: list[dict] = field(default_factory=list)
    # HTDENC1 (AES-256-GCM) when encrypted; sha256 and bytes are of the stored, encrypted bytes
    encrypted: bool = False
    key_id: str | None = None
    # incremental versions (kind "incremental"): `file` holds the added and changed rows (whole
    # rows), `deleted_file` the primary keys of the deleted rows (None: nothing deleted)
    added_rows: int = 0
    changed_rows: int = 0
    deleted_rows: int = 0
    deleted_file: str | None = None
    deleted_bytes: int = 0
    deleted_sha256: str | None = None
    deleted_key_id: str | None = None  # encrypted with this key id (None: plain Parquet)


@dataclass(frozen=True)
class StoredFile:
    """One file of a backup as stored: what checks it (sha256, bytes of the stored bytes) and
    how it is encrypted. `role`: "rows" (the table's file) or "deleted" (an incremental
    version's deleted keys)."""

    table: str
    role: str
    file: str
    sha256: str
    bytes: int
    encrypted: bool
    key_id: str | None


@dataclass
class Manifest:
    type: str
    relation_id: str
    version: int
    location: str  # the backup's folder under the snapshot root
    snapshot_uri: str
    uid: str | None
    run_id: str | None
    registry_file: str
    registry_sha256: str
    created_at: str
    finished_at: str
    compression: str
    tables: list[TableManifest]
    kind: str = "full"
    format: int = FORMAT_VERSION
    # how the backup's files are encrypted: {algorithm, format, chunk_bytes, key_id} (key_id:
    # the one manifest.json is encrypted with; each table names its own); None: not encrypted
    encryption: dict | None = None
    # kind "incremental": the version this one applies on top of; `state_marks` per table
    # (rows, row_digest, pk_digest, change_column, change_max) describe the session's state
    # at this version, so the next protective backup can tell whether anything changed
    base_version: int | None = None
    state_marks: dict | None = None
    # kind "incremental": "incremental" (changes since the previous version) or "differential"
    # (changes since the full version: its base_version is the full one)
    delta: str | None = None
    # how the tables were read as one state of the database (dialects/read.py ReadSnapshot);
    # None: each table read in a transaction of its own (older backups)
    consistency: str | None = None

    @property
    def total_rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def total_bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    def table(self, name: str) -> TableManifest:
        for t in self.tables:
            if t.table == name:
                return t
        raise KeyError(name)

    def stored_files(self) -> list[StoredFile]:
        """Every snapshot file of the backup (manifest.json aside)."""
        out = []
        for t in self.tables:
            out.append(
                StoredFile(t.table, "rows", t.file, t.sha256, t.bytes, t.encrypted, t.key_id)
            )
            deleted = getattr(t, "deleted_file", None)  # incremental versions
            if deleted:
                key_id = getattr(t, "deleted_key_id", None)
                out.append(
                    StoredFile(
                        t.table,
                        "deleted",
                        deleted,
                        getattr(t, "deleted_sha256", None) or "",
                        getattr(t, "deleted_bytes", 0),
                        key_id is not None,
                        key_id,
                    )
                )
        return out

    def set_stored(self, f: StoredFile, sha256: str, size: int, key_id: str | None) -> None:
        """Record a file's new stored form (after re-encryption)."""
        t = self.table(f.table)
        if f.role == "deleted":
            t.deleted_sha256, t.deleted_bytes, t.deleted_key_id = sha256, size, key_id
        else:
            t.sha256, t.bytes, t.encrypted, t.key_id = sha256, size, key_id is not None, key_id

    def key_ids(self) -> set[str]:
        """Every key id this backup needs to be read (its files' and its manifest file's)."""
        ids = {f.key_id for f in self.stored_files() if f.encrypted and f.key_id}
        if self.encryption and self.encryption.get("key_id"):
            ids.add(self.encryption["key_id"])
        return ids

    def remote_files(self) -> list[dict]:
        """Every remote-file reference as {table, column, key, url}."""
        out = []
        for t in self.tables:
            for ref in t.files:
                for key, url in zip(ref["keys"], ref["urls"], strict=True):
                    values = key if isinstance(key, list) else [key]
                    out.append(
                        {
                            "table": t.table,
                            "column": ref["column"],
                            "key": dict(zip(ref["key_columns"], values, strict=True)),
                            "url": url,
                        }
                    )
        return out

    def to_json(self) -> str:
        # shallow: dataclasses.asdict deep-copies every value (slow for big file lists)
        doc = {**self.__dict__, "tables": [dict(t.__dict__) for t in self.tables]}
        return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        doc = json.loads(text)
        doc["tables"] = [TableManifest(**t) for t in doc["tables"]]
        return cls(**doc)
