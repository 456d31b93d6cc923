"""Encrypted snapshot files (AES-256-GCM, HTDENC1) on SQLite, PostgreSQL and MariaDB: round
trips, key rotation, refusals before anything is written, and no key material anywhere."""

from __future__ import annotations

import base64
import hashlib
import io
import pickle
import struct
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, serialize_value

from htd_pipelines import backup, delete, restore
from htd_pipelines.api import list_backups, load_backup
from htd_pipelines.cli.launch import failure_message
from htd_pipelines.cli.main import main
from htd_pipelines.jobs.run_config import restore_run_config
from htd_pipelines.registry.spec import load_registry
from htd_pipelines.resources import SnapshotStorage
from htd_pipelines.store import catalog
from htd_pipelines.store.catalog import CATALOG_TABLES
from htd_pipelines.store.crypto import (
    KEY_ID_ENV,
    KEYS_ENV,
    DecryptError,
    EncryptingWriter,
    KeyConfigError,
    Keyring,
    decrypt_bytes,
    encrypt_bytes,
    new_key,
)
from htd_pipelines.store.keys import rotate_keys
from htd_pipelines.store.manifest import MANIFEST_FILE
from htd_pipelines.store.snapshots import (
    ROTATE_SUFFIX,
    DecryptionError,
    SnapshotError,
    SnapshotStore,
    StoreConfigError,
)
from tests.support.chinook import snapshot_database

K1, K2, WRONG = new_key(), new_key(), new_key()
SECRETS = (K1, K2, WRONG)


def secret_forms(key_b64: str) -> list[str]:
    raw = base64.b64decode(key_b64)
    return [key_b64, base64.urlsafe_b64encode(raw).decode(), raw.hex(), key_b64.rstrip("=")]


def assert_no_secret(text: str) -> None:
    for key in SECRETS:
        for form in secret_forms(key):
            assert form not in text


def use_keys(monkeypatch, current: str | None, **keys: str) -> None:
    monkeypatch.setenv(KEYS_ENV, ",".join(f"{k}:{v}" for k, v in keys.items()))
    if current:
        monkeypatch.setenv(KEY_ID_ENV, current)
    else:
        monkeypatch.delenv(KEY_ID_ENV, raising=False)


def no_keys(monkeypatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    monkeypatch.delenv(KEY_ID_ENV, raising=False)


@pytest.fixture
def env(seeded_env, monkeypatch, tmp_path):
    no_keys(monkeypatch)
    monkeypatch.delenv("HTD_ZSTD_LEVEL", raising=False)
    env = seeded_env(5, seed=11, test_fraction=0)
    return env


def state(env) -> dict:
    return snapshot_database(env.url, exclude=CATALOG_TABLES)


def backed_up(env, sess, *, keep_source: bool = False, instance=None) -> int:
    result = env.run_backup([sess], keep_source=keep_source, instance=instance)
    assert result.success, failure_message(result)
    return list_backups("inst", sess)[0].id


def run_restore(env, backup_id: int, instance=None):
    job = env.defs().resolve_job_def("restore_job")
    return job.execute_in_process(
        run_config=restore_run_config(backup_id, "restorer", False, None),
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def record(env, backup_id: int):
    with env.engine.connect() as conn:
        return catalog.get_backup(conn, backup_id)


def stored_files(env, backup_id: int) -> dict[str, bytes]:
    m = record(env, backup_id).manifest
    folder = Path(env.store().full(m.location))
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != ".reserved"}


def catalog_text(env) -> str:
    with env.engine.connect() as conn:
        rows = [
            dict(r)
            for t in (catalog.back_up, catalog.operation_log)
            for r in conn.execute(sa.select(t)).mappings()
        ]
    return repr(rows)


def event_log_text(instance: DagsterInstance) -> str:
    parts = []
    for run in instance.get_runs():
        parts.append(serialize_value(run))
        parts += [serialize_value(e) for e in instance.all_logs(run.run_id)]
    return "\n".join(parts)


def frames_equal(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


# ---------------------------------------------------------------------------------------------
# backups, reads and restores
# ---------------------------------------------------------------------------------------------


def test_encrypted_backup_round_trips_and_keeps_keys_out_of_everything(env, monkeypatch) -> None:
    sess = env.ids[2]
    before = state(env)
    plain_id = backed_up(env, sess, keep_source=True)  # v1, not encrypted: the reference
    use_keys(monkeypatch, "k1", k1=K1)
    monkeypatch.setenv("HTD_ZSTD_LEVEL", "3")
    instance = DagsterInstance.ephemeral()
    backup_id = backed_up(env, sess, instance=instance)  # v2, encrypted; source deleted
    assert state(env) != before

    rec = record(env, backup_id)
    m = rec.manifest
    assert m.compression == "zstd(3)"
    assert m.encryption == {
        "algorithm": "AES-256-GCM",
        "format": "HTDENC1",
        "chunk_bytes": 1 << 20,
        "key_id": "k1",
    }
    files = stored_files(env, backup_id)
    assert set(files) == {t.file for t in m.tables} | {MANIFEST_FILE}
    for t in m.tables:
        data = files[t.file]
        assert data[:7] == b"HTDENC1" and data[8:10] == b"k1"
        assert not data.startswith(b"PAR1") and not data.endswith(b"PAR1")
        assert t.encrypted and t.key_id == "k1"
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (t.sha256, t.bytes)
        with pytest.raises(pa.ArrowInvalid):  # not Parquet without the key
            pq.read_table(pa.BufferReader(data))
    assert files[MANIFEST_FILE].startswith(b"HTDENC1")
    assert env.store().read_plain(f"{m.location}/{MANIFEST_FILE}") == rec.manifest_json.encode()
    plain = record(env, plain_id).manifest
    assert not any(t.encrypted for t in plain.tables) and plain.encryption is None

    # the read API gives exactly what the plain backup gives
    frames_equal(load_backup("inst", sess, version=2), load_backup("inst", sess, version=1))

    # restore: every value back
    result = run_restore(env, backup_id, instance=instance)
    assert result.success, failure_message(result)
    assert state(env) == before
    assert record(env, backup_id).is_reback == 1

    # no key material in the manifest, the catalog, the runs, the event log
    assert_no_secret(rec.manifest_json)
    assert_no_secret(catalog_text(env))
    log = event_log_text(instance)
    assert "record_backup" in log and "restore_rows" in log  # the runs are there, not the key
    assert_no_secret(log)


def test_rotation_with_old_and_new_keys(env, monkeypatch, capsys) -> None:
    a, b, c = env.ids[0], env.ids[1], env.ids[3]
    c_id = backed_up(env, c, keep_source=True)  # plain backup, from before encryption
    use_keys(monkeypatch, "k1", k1=K1)
    before_a = state(env)
    a_id = backed_up(env, a)
    b_id = backed_up(env, b, keep_source=True)
    reference = {i: load_backup("inst", s) for i, s in ((a_id, a), (b_id, b), (c_id, c))}
    after_backups = state(env)

    # the new key comes in; the old one is removed too early: refused, naming the key id
    use_keys(monkeypatch, "k2", k2=K2)
    result = run_restore(env, a_id)
    assert not result.success
    msg = failure_message(result)
    assert "key id 'k1'" in msg and "not in HTD_ENCRYPTION_KEYS" in msg and ".parquet" in msg
    assert_no_secret(msg)
    assert state(env) == after_backups and record(env, a_id).is_reback == 0
    with pytest.raises(DecryptionError, match="key id 'k1'"):
        load_backup("inst", a)
    assert main(["keys", "check"]) == 4
    out = capsys.readouterr().out
    assert f"backup {a_id} " in out and f"backup {b_id} " in out and f"backup {c_id} " not in out
    assert "k1 not available" in out

    # both keys: a dry run changes nothing
    use_keys(monkeypatch, "k2", k1=K1, k2=K2)
    files_before = {i: stored_files(env, i) for i in (a_id, b_id, c_id)}
    assert main(["keys", "rotate", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: 3 would rotate" in out and "from k1 to k2" in out and "from plain to k2" in out
    assert {i: stored_files(env, i) for i in (a_id, b_id, c_id)} == files_before

    assert main(["keys", "rotate"]) == 0
    out = capsys.readouterr().out
    assert "3 rotated" in out
    assert_no_secret(out)
    store = env.store()
    for i in (a_id, b_id, c_id):
        rec = record(env, i)
        m = rec.manifest
        assert m.encryption["key_id"] == "k2"
        for t in m.tables:
            path = f"{m.location}/{t.file}"
            assert (t.encrypted, t.key_id) == (True, "k2")
            assert store.key_id_of(path) == "k2"
            assert store.file_digest(path) == (t.sha256, t.bytes)
        assert rec.total_bytes == m.total_bytes
        assert store.key_id_of(f"{m.location}/{MANIFEST_FILE}") == "k2"
        assert store.read_plain(f"{m.location}/{MANIFEST_FILE}") == rec.manifest_json.encode()
        assert not [p for p in stored_files(env, i) if p.endswith(ROTATE_SUFFIX)]
    with env.engine.connect() as conn:
        rotated = conn.execute(
            sa.select(catalog.operation_log.c.backup_ids).where(
                catalog.operation_log.c.action == "rotate_keys"
            )
        ).scalars()
        assert sorted(rotated) == sorted(f"[{i}]" for i in (a_id, b_id, c_id))
    assert_no_secret(catalog_text(env))

    # again: nothing to do, nothing rewritten
    files_rotated = {i: stored_files(env, i) for i in (a_id, b_id, c_id)}
    assert main(["keys", "rotate"]) == 0
    assert "3 up to date" in capsys.readouterr().out
    assert {i: stored_files(env, i) for i in (a_id, b_id, c_id)} == files_rotated

    # the old key goes: everything still reads and restores with the new key only
    use_keys(monkeypatch, "k2", k2=K2)
    assert main(["keys", "check"]) == 0
    capsys.readouterr()
    for i, s in ((a_id, a), (b_id, b), (c_id, c)):
        version = record(env, i).version
        frames_equal(load_backup("inst", s, version=version), reference[i])
    result = run_restore(env, a_id)
    assert result.success, failure_message(result)
    assert state(env) == before_a


def test_interrupted_rotation_is_finished_by_the_next_run(env, monkeypatch) -> None:
    sess = env.ids[4]
    before = state(env)
    use_keys(monkeypatch, "k1", k1=K1)
    backup_id = backed_up(env, sess)
    use_keys(monkeypatch, "k2", k1=K1, k2=K2)
    original = stored_files(env, backup_id)

    # a copy left by a run stopped before its commit is discarded and redone
    m = record(env, backup_id).manifest
    t0 = m.tables[0]
    env.store().reencrypt(f"{m.location}/{t0.file}", t0, "k2")
    assert f"{t0.file}{ROTATE_SUFFIX}" in stored_files(env, backup_id)

    # a run stopped after its commit, before the files were replaced
    real_replace = SnapshotStore.replace

    def crash(self, src, dst):
        raise RuntimeError("killed")

    monkeypatch.setattr(SnapshotStore, "replace", crash)
    with pytest.raises(RuntimeError, match="killed"):
        rotate_keys(env.engine)
    monkeypatch.setattr(SnapshotStore, "replace", real_replace)
    rec = record(env, backup_id)
    assert {t.key_id for t in rec.manifest.tables} == {"k2"}  # committed
    files = stored_files(env, backup_id)
    assert all(files[name] == data for name, data in original.items())  # not yet replaced
    assert len([n for n in files if n.endswith(ROTATE_SUFFIX)]) == len(m.tables)
    # meanwhile a restore is refused (the files do not match the catalog), nothing written
    result = run_restore(env, backup_id)
    assert not result.success and "does not match its manifest" in failure_message(result)
    assert record(env, backup_id).is_reback == 0

    [outcome] = rotate_keys(env.engine)
    assert outcome.status == "up to date" and len(outcome.recovered) == len(m.tables)
    files = stored_files(env, backup_id)
    assert not [n for n in files if n.endswith(ROTATE_SUFFIX)]
    use_keys(monkeypatch, "k2", k2=K2)  # the old key is not needed any more
    store = env.store()
    assert store.key_id_of(f"{m.location}/{MANIFEST_FILE}") == "k2"
    result = run_restore(env, backup_id)
    assert result.success, failure_message(result)
    assert state(env) == before


def _plan_extract_record(env, ids):
    registry = load_registry(env.relations_file)
    store = env.store()
    plan = backup.plan_backup(
        env.engine,
        registry,
        store,
        type_name="inst",
        relation_ids=ids,
        uid="u",
        keep_source=False,
        run_id="test-run",
    )
    resolved = backup.resolved(env.engine, registry, "inst", "test-run")
    extracts = [
        backup.extract_table(env.engine, registry, store, plan, t.name) for t in resolved.tables
    ]
    return registry, plan, backup.record_backup(env.engine, registry, store, plan, extracts)


@pytest.mark.parametrize("damage", ["wrong_key", "missing_key", "flip", "truncate"])
def test_bad_key_or_damaged_ciphertext_is_refused_before_writing(env, monkeypatch, damage) -> None:
    use_keys(monkeypatch, "k1", k1=K1)
    restored_sess, deleted_sess = env.ids[1], env.ids[2]
    backup_id = backed_up(env, restored_sess)  # source deleted: to restore
    registry, plan, recorded = _plan_extract_record(env, [deleted_sess])  # source still there
    m = record(env, backup_id).manifest
    m2 = record(env, recorded[0].backup_id).manifest
    if damage == "wrong_key":
        use_keys(monkeypatch, "k1", k1=WRONG)
    elif damage == "missing_key":
        use_keys(monkeypatch, "k2", k2=K2)
    else:
        for mm in (m, m2):
            path = Path(env.store().full(f"{mm.location}/{mm.table('session_task').file}"))
            data = bytearray(path.read_bytes())
            if damage == "flip":
                data[len(data) // 2] ^= 0x01
            else:
                del data[-20:]
            path.write_bytes(bytes(data))
    expected = {
        "wrong_key": "is not the key it was encrypted with",
        "missing_key": "not in HTD_ENCRYPTION_KEYS",
        "flip": "session_task does not match its manifest",
        "truncate": "session_task does not match its manifest",
    }[damage]

    # restore: refused, database untouched, still restorable
    before = state(env)
    result = run_restore(env, backup_id)
    assert not result.success
    msg = failure_message(result)
    assert expected in msg and "key id 'k1'" in msg and ".parquet" in msg, msg
    assert_no_secret(msg)
    assert state(env) == before
    assert record(env, backup_id).is_reback == 0
    preview = restore.preview_restore(env.engine, env.engine, registry, backup_id)
    assert not preview.ok and expected in preview.problems[0]

    # the read API refuses too
    with pytest.raises(SnapshotError, match="key id 'k1'") as exc:
        load_backup("inst", restored_sess)
    assert expected in str(exc.value)

    # a delete after a backup whose files do not check is refused: nothing deleted
    with pytest.raises(SnapshotError, match="key id 'k1'"):
        delete.delete_source(env.engine, registry, env.store(), plan, recorded)
    assert state(env) == before


def test_bad_key_configuration_fails_the_backup_at_once(env, monkeypatch) -> None:
    before = state(env)
    for keys, current, expected in [
        ({"k1": K1}, "k9", "HTD_ENCRYPTION_KEY_ID is 'k9', which is not a key id"),
        ({"k1": K1[:-8]}, "k1", "entry 1 (key id 'k1')"),
    ]:
        use_keys(monkeypatch, current, **keys)
        result = env.run_backup([env.ids[0]])
        assert not result.success
        msg = failure_message(result)
        assert expected in msg, msg
        assert_no_secret(msg)
    assert state(env) == before and list_backups() == []


# ---------------------------------------------------------------------------------------------
# the format, the keyring and the settings (no database)
# ---------------------------------------------------------------------------------------------

RING = Keyring({"k1": base64.b64decode(K1), "k2": base64.b64decode(K2)}, "k1")


def _encrypt(data: bytes, chunk: int, key_id: str = "k1", piece: int = 7) -> bytes:
    out = io.BytesIO()

    class Sink:
        def write(self, b) -> int:
            return out.write(b)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    w = EncryptingWriter(Sink(), key_id, RING.key(key_id), chunk_size=chunk)
    for i in range(0, len(data), piece):
        w.write(data[i : i + piece])
        assert len(w._buf) <= chunk  # bounded: never more than one chunk held
    w.close()
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 64 * 5 + 3])
def test_format_round_trips(size) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    enc = _encrypt(data, 64)
    assert enc.startswith(b"HTDENC1")
    assert decrypt_bytes(enc, RING, "f") == data
    assert decrypt_bytes(enc, RING, "f", expected_key_id="k1") == data
    assert decrypt_bytes(encrypt_bytes(data, "k2", RING.key("k2"), 64), RING, "f") == data


def _chunks(enc: bytes, chunk: int) -> tuple[bytes, list[bytes]]:
    header_len = 7 + 1 + enc[7] + 4 + 32 + 8
    body = enc[header_len:]
    block = chunk + 16
    return enc[:header_len], [body[i : i + block] for i in range(0, len(body), block)]


def test_tampering_truncation_reordering_and_wrong_keys_are_detected() -> None:
    chunk = 64
    data = bytes(range(256))[: 3 * chunk] + b"!" * (3 * chunk)  # 6 full chunks
    enc = _encrypt(data, chunk)
    header, chunks = _chunks(enc, chunk)
    assert len(chunks) == 6 and all(len(c) == chunk + 16 for c in chunks)
    bad = {
        "flip body": enc[:100] + bytes([enc[100] ^ 1]) + enc[101:],
        "flip tag": enc[:-1] + bytes([enc[-1] ^ 1]),
        "flip salt": header[:20] + bytes([header[20] ^ 1]) + header[21:] + b"".join(chunks),
        "cut at a chunk boundary": header + b"".join(chunks[:5]),
        "cut inside a chunk": enc[:-10],
        "cut to the header": header,
        "swap chunks": header + b"".join([chunks[1], chunks[0], *chunks[2:]]),
        "drop a chunk": header + b"".join([chunks[0], *chunks[2:]]),
        "append a chunk": enc + chunks[-1],
        "chunk size": header[:10] + struct.pack(">I", chunk * 2) + header[14:] + b"".join(chunks),
        "other key id": header.replace(b"k1", b"k2", 1) + b"".join(chunks),
    }
    for what, blob in bad.items():
        with pytest.raises(DecryptError) as exc:
            decrypt_bytes(blob, RING, "snapshot f")
        assert "snapshot f" in str(exc.value), what
        assert_no_secret(str(exc.value))
    wrong = Keyring({"k1": base64.b64decode(WRONG)})
    with pytest.raises(DecryptError, match="failed authentication with key id 'k1' at chunk 0"):
        decrypt_bytes(enc, wrong, "f")
    with pytest.raises(DecryptError, match="key id 'k1', which is not in HTD_ENCRYPTION_KEYS"):
        decrypt_bytes(enc, Keyring({"k2": base64.b64decode(K2)}), "f")
    with pytest.raises(DecryptError, match="its manifest says 'k2'"):
        decrypt_bytes(enc, RING, "f", expected_key_id="k2")
    with pytest.raises(DecryptError, match="not an encrypted snapshot file"):
        decrypt_bytes(b"PAR1....", RING, "f")


def test_keyring_from_environment_never_shows_keys() -> None:
    ring = Keyring.from_env({KEYS_ENV: f" k1:{K1} , k2:{K2}", KEY_ID_ENV: "k2"})
    assert ring.ids == ["k1", "k2"] and ring.current_id == "k2"
    assert_no_secret(repr(ring) + str(ring))
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(K1)).decode()
    assert Keyring.from_env({KEYS_ENV: f"k1:{urlsafe}"}).key("k1") == base64.b64decode(K1)
    assert Keyring.from_env({}).current_id is None
    bad = {
        f"k1:{K1[:-8]}": "entry 1 (key id 'k1'): the key decodes to",
        f"k1:{K1},k1:{K2}": "key id 'k1' is given twice",
        f"k1:{K1},{K2}": "entry 2 is not of the form keyid:base64key",
        f"k1:{K1}$": "entry 1 (key id 'k1'): the key is not valid base64",
        f"k 1:{K1}": "the key id is not valid",
    }
    for value, expected in bad.items():
        with pytest.raises(KeyConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            Keyring.from_env({KEYS_ENV: value})
        try:
            Keyring.from_env({KEYS_ENV: value})
        except KeyConfigError as exc:
            assert_no_secret(str(exc))
    with pytest.raises(KeyConfigError, match="'k3', which is not a key id"):
        Keyring.from_env({KEYS_ENV: f"k1:{K1}", KEY_ID_ENV: "k3"})


def test_zstd_level_and_key_settings_come_from_the_environment(monkeypatch, tmp_path) -> None:
    no_keys(monkeypatch)
    monkeypatch.setenv("HTD_ZSTD_LEVEL", "7")
    assert SnapshotStore(str(tmp_path)).zstd_level == 7
    assert SnapshotStorage(uri=str(tmp_path)).store().zstd_level == 7
    assert SnapshotStorage(uri=str(tmp_path), zstd_level=5).store().zstd_level == 5
    assert SnapshotStore(str(tmp_path)).encrypt_key_id is None
    for bad in ("x", "0", "23"):
        monkeypatch.setenv("HTD_ZSTD_LEVEL", bad)
        with pytest.raises(StoreConfigError, match="zstd level"):
            SnapshotStore(str(tmp_path))
    monkeypatch.delenv("HTD_ZSTD_LEVEL")
    use_keys(monkeypatch, "k2", k1=K1, k2=K2)
    store = SnapshotStorage(uri=str(tmp_path)).store()
    assert store.encrypt_key_id == "k2" and store.keyring.ids == ["k1", "k2"]
    assert_no_secret(repr(SnapshotStorage(uri=str(tmp_path))))
    use_keys(monkeypatch, "k9", k1=K1)
    with pytest.raises(StoreConfigError, match="'k9'"):
        SnapshotStore(str(tmp_path))
