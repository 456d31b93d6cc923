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
