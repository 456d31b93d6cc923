"""Unit tests of the backup manifest (htd_pipelines.store.manifest): pure data, no I/O."""

from __future__ import annotations

import json

import pytest

from htd_pipelines.store.manifest import FORMAT_VERSION, Manifest, StoredFile, TableManifest


def table_manifest(name: str, **overrides: object) -> TableManifest:
    fields: dict = {
        "table": name,
        "file": f"{name}.parquet",
        "rows": 3,
        "bytes": 1000,
        "sha256": "a" * 64,
        "key": "session_id",
        "parent": None,
        "primary_key": ["id"],
        "pk_digest": "b" * 64,
        "columns": [
            {
                "name": "id",
                "arrow_type": "int64",
                "sql_type": "BIGINT",
                "nullable": False,
                "kind": "native",
            },
            {
                "name": "note",
                "arrow_type": "string",
                "sql_type": "TEXT",
                "nullable": True,
                "kind": "native",
            },
        ],
    }
    fields.update(overrides)
    return TableManifest(**fields)


def manifest(**overrides: object) -> Manifest:
    fields: dict = {
        "type": "inst",
        "relation_id": "42",
        "version": 2,
        "location": "inst/42/v2",
        "snapshot_uri": "file:///tmp/snapshots",
        "uid": "alice",
        "run_id": "run-1",
        "registry_file": "relations.yaml",
        "registry_sha256": "c" * 64,
        "created_at": "2024-01-02T03:04:05+00:00",
        "finished_at": "2024-01-02T03:04:06+00:00",
        "compression": "zstd",
        "tables": [
            table_manifest("sessions", rows=1, bytes=100),
            table_manifest(
                "attachments",
                rows=2,
                bytes=250,
                parent="sessions",
                files=[
                    {
                        "column": "url",
                        "key_columns": ["id"],
                        "keys": [7, 8],
                        "urls": ["s3://b/7.pdf", "s3://b/8.pdf"],
                    },
                    {
                        "column": "thumb",
                        "key_columns": ["session_id", "n"],
                        "keys": [[42, 1]],
                        "urls": ["https://x/thumb/1.png"],
                    },
                ],
            ),
        ],
    }
    fields.update(overrides)
    return Manifest(**fields)


def test_round_trip_through_json_is_equal() -> None:
    original = manifest(
        kind="incremental",
        base_version=1,
        delta="incremental",
        state_marks={"sessions": {"rows": 1, "row_digest": "d" * 64, "change_max": None}},
        encryption={"algorithm": "AES-256-GCM", "format": "HTDENC1", "key_id": "k1"},
        tables=[
            table_manifest(
                "sessions",
                encrypted=True,
                key_id="k1",
                added_rows=1,
                changed_rows=2,
                deleted_rows=3,
                deleted_file="sessions.deleted.parquet",
                deleted_bytes=64,
                deleted_sha256="e" * 64,
                deleted_key_id="k1",
            )
        ],
    )
    text = original.to_json()
    back = Manifest.from_json(text)
    assert back == original
    assert isinstance(back.tables[0], TableManifest)
    assert back.tables[0].deleted_file == "sessions.deleted.parquet"
    assert back.to_json() == text  # the stored form is deterministic


def test_round_trip_keeps_non_ascii_text_and_defaults() -> None:
    original = manifest(uid="José 张")
    text = original.to_json()
    assert "José 张" in text  # stored as UTF-8, not \u escapes
    back = Manifest.from_json(text)
    assert back == original
    assert back.uid == "José 张"
    assert back.kind == "full"
    assert back.format == FORMAT_VERSION
    assert back.encryption is None and back.base_version is None


def test_to_json_is_plain_json_with_every_field() -> None:
    doc = json.loads(manifest().to_json())
    assert doc["type"] == "inst" and doc["relation_id"] == "42" and doc["version"] == 2
    assert [t["table"] for t in doc["tables"]] == ["sessions", "attachments"]
    assert doc["tables"][1]["parent"] == "sessions"
    assert doc["tables"][0]["encrypted"] is False


def test_to_json_does_not_alias_the_manifest() -> None:
    m = manifest()
    text = m.to_json()
    m.tables[0].rows = 999
    assert Manifest.from_json(text).tables[0].rows == 1


def test_totals_sum_the_tables() -> None:
    m = manifest()
    assert m.total_rows == 3
    assert m.total_bytes == 350


def test_remote_files_flattens_every_reference() -> None:
    refs = manifest().remote_files()
    assert refs == [
        {"table": "attachments", "column": "url", "key": {"id": 7}, "url": "s3://b/7.pdf"},
        {"table": "attachments", "column": "url", "key": {"id": 8}, "url": "s3://b/8.pdf"},
        {
            "table": "attachments",
            "column": "thumb",
            "key": {"session_id": 42, "n": 1},
            "url": "https://x/thumb/1.png",
        },
    ]


def test_remote_files_empty_without_file_columns() -> None:
    assert manifest(tables=[table_manifest("sessions")]).remote_files() == []


def test_remote_files_refuses_keys_and_urls_of_different_lengths() -> None:
    bad = table_manifest(
        "t", files=[{"column": "u", "key_columns": ["id"], "keys": [1, 2], "urls": ["only-one"]}]
    )
    with pytest.raises(ValueError):
        manifest(tables=[bad]).remote_files()


def test_table_lookup() -> None:
    m = manifest()
    assert m.table("attachments") is m.tables[1]
    assert m.table("sessions").rows == 1


def test_table_lookup_of_unknown_table_fails_naming_it() -> None:
    with pytest.raises(KeyError, match="no_such_table"):
        manifest().table("no_such_table")


def test_stored_files_lists_rows_and_deleted_files() -> None:
    m = manifest(
        tables=[
            table_manifest("plain"),
            table_manifest(
                "inc",
                encrypted=True,
                key_id="k2",
                deleted_file="inc.deleted.parquet",
                deleted_bytes=12,
                deleted_sha256="f" * 64,
                deleted_key_id="k3",
            ),
        ],
        encryption={"key_id": "k1"},
    )
    files = m.stored_files()
    assert [(f.table, f.role, f.file) for f in files] == [
        ("plain", "rows", "plain.parquet"),
        ("inc", "rows", "inc.parquet"),
        ("inc", "deleted", "inc.deleted.parquet"),
    ]
    assert files[0].encrypted is False and files[0].key_id is None
    assert files[2] == StoredFile("inc", "deleted", "inc.deleted.parquet", "f" * 64, 12, True, "k3")
    assert m.key_ids() == {"k1", "k2", "k3"}


def test_key_ids_empty_when_nothing_is_encrypted() -> None:
    assert manifest().key_ids() == set()


def test_set_stored_records_a_re_encrypted_file() -> None:
    m = manifest(
        tables=[
            table_manifest(
                "inc",
                deleted_file="inc.deleted.parquet",
                deleted_bytes=12,
                deleted_sha256="f" * 64,
            )
        ]
    )
    rows, deleted = m.stored_files()
    m.set_stored(rows, "1" * 64, 2048, "k9")
    m.set_stored(deleted, "2" * 64, 99, "k9")
    t = m.table("inc")
    assert (t.sha256, t.bytes, t.encrypted, t.key_id) == ("1" * 64, 2048, True, "k9")
    assert (t.deleted_sha256, t.deleted_bytes, t.deleted_key_id) == ("2" * 64, 99, "k9")
    assert m.key_ids() == {"k9"}
    # and back to plain
    m.set_stored(m.stored_files()[0], "3" * 64, 1000, None)
    assert m.table("inc").encrypted is False and m.table("inc").key_id is None
