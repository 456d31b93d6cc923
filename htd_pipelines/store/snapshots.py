"""The snapshot store: versioned Parquet files per session under HTD_SNAPSHOT_URI.

Layout: ``<root>/<type>/<relation_id>/v<version:06d>/<table>.parquet`` plus ``manifest.json``,
the relation id's folder named by `registry.relation_ids.path_segment` (a plain id as it is,
any other id encoded: collision-free, never '.' or '..', never too long); the id itself is in
the manifest, and readers take the folder from the manifest's (and catalog's) location.
Paths go through pyarrow's filesystem layer, so a local folder and object storage
(``s3://bucket/prefix``) share one code path.

With ``HTD_ENCRYPTION_KEY_ID`` set, every snapshot file (Parquet files and manifest.json) is
written encrypted (AES-256-GCM, the streaming HTDENC1 format of `htd_pipelines.store.crypto`); the
sha256 and size recorded in the manifest are those of the stored, encrypted bytes, so a file can
be checked without the key. Reading decrypts with whichever key of ``HTD_ENCRYPTION_KEYS`` the
file's header names.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from htd_pipelines import settings
from htd_pipelines.registry.relation_ids import path_segment
from htd_pipelines.store import crypto
from htd_pipelines.store.crypto import CHUNK_SIZE, DecryptError, EncryptingWriter, Keyring, Sink

SAFE_PART = re.compile(r"[^A-Za-z0-9._=-]")
ZSTD_LEVEL_ENV = settings.ZSTD_LEVEL.name
ROTATE_SUFFIX = ".rotating"  # a re-encrypted copy, next to the file it replaces
_CURRENT = object()


class SnapshotError(RuntimeError):
    """A snapshot file is missing, damaged or does not match its manifest."""


class StoreConfigError(SnapshotError):
    """HTD_ENCRYPTION_KEYS, HTD_ENCRYPTION_KEY_ID or HTD_ZSTD_LEVEL are not usable."""


class DecryptionError(SnapshotError):
    """An encrypted snapshot file cannot be decrypted: key id not available, wrong key,
    tampered or truncated. The message names the file and the key id, never the key."""


def zstd_level_from_env() -> int:
    """HTD_ZSTD_LEVEL (1-22), default 1."""
    text = settings.ZSTD_LEVEL.text() or ""
    if not text:
        return 1
    try:
        level = int(text)
    except ValueError:
        level = 0
    if not 1 <= level <= 22:
        raise StoreConfigError(f"{ZSTD_LEVEL_ENV} is {text!r}: a zstd level is 1 to 22")
    return level


def _check_level(level: int) -> int:
    if not 1 <= int(level) <= 22:
        raise StoreConfigError(f"zstd level {level} is out of range: it must be from 1 to 22")
    return int(level)


def safe_part(value: object) -> str:
    """A type name as one path segment (anything unusual is %-escaped; relation ids go
    through `path_segment`)."""
    return SAFE_PART.sub(lambda m: f"%{ord(m.group()):02X}", str(value))


class HashingSink:
    """A write-only file object that counts and hashes the bytes it forwards."""

    def __init__(self, stream: pa.NativeFile) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:  # noqa: ANN001 - any bytes-like object
        view = memoryview(data)
        self.sha256.update(view)
        self.size += view.nbytes
        self._stream.write(view)
        return view.nbytes

    def flush(self) -> None:
        self._stream.flush()

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
            self.closed = True


class _HashingReader:
    """A read-only stream that counts and hashes the bytes read through it."""

    def __init__(self, stream: pa.NativeFile) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read() if n is None or n < 0 else self._stream.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK_SIZE):
            pass


@dataclass(frozen=True)
class Expected:
    """What a stored file must be (a TableManifest fits): sha256 and size of the stored bytes,
    and whether / with which key id it is encrypted."""

    table: str
    sha256: str
    bytes: int
    encrypted: bool = False
    key_id: str | None = None


@dataclass(frozen=True)
class WrittenFile:
    path: str
    rows: int
    size: int
    sha256: str
    key_id: str | None = None  # the key id it is encrypted with, None: plain Parquet


class ParquetFileWriter:
    """Streams record batches into one zstd Parquet file, hashing as it writes (and encrypting
    chunk by chunk when the store encrypts: the hash is of the stored, encrypted bytes)."""

    def __init__(self, store: SnapshotStore, path: str, schema: pa.Schema, zstd_level: int) -> None:
        self.path = path
        self._store = store
        self.key_id = store.encrypt_key_id
        self._sink = HashingSink(store.fs.open_output_stream(store.full(path)))
        self._out = store.encrypting(self._sink)
        self._writer = pq.ParquetWriter(
            self._out,
            schema,
            compression="zstd",
            compression_level=zstd_level,
            use_dictionary=False,  # session data is high-cardinality: faster and smaller
        )
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.rows += batch.num_rows

    def close(self) -> WrittenFile:
        self._writer.close()
        self._out.close()  # seals the final chunk, closes the sink
        self._sink.close()
        self._store.sync(self.path)
        return WrittenFile(
            self.path, self.rows, self._sink.size, self._sink.sha256.hexdigest(), self.key_id
        )


class SnapshotStore:
    """The store. `zstd_level` None: HTD_ZSTD_LEVEL (default 1). `keyring` None: the keys of
    HTD_ENCRYPTION_KEYS, encrypting new files with HTD_ENCRYPTION_KEY_ID (unset: no encryption)."""

    def __init__(
        self, uri: str, zstd_level: int | None = None, keyring: Keyring | None = None
    ) -> None:
        self.uri = uri
        self.zstd_level = zstd_level_from_env() if zstd_level is None else _check_level(zstd_level)
        if keyring is None:
            try:
                keyring = Keyring.from_env()
            except crypto.KeyConfigError as exc:
                raise StoreConfigError(str(exc)) from None
        self.keyring = keyring
        self.encrypt_key_id = keyring.current_id
        if "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
        else:
            from pathlib import Path

            self.fs, self.root = pafs.LocalFileSystem(), str(Path(uri).resolve())
        self.root = self.root.rstrip("/")

    def full(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    @staticmethod
    def backup_dir(type_name: str, relation_id: object, version: int) -> str:
        return f"{safe_part(type_name)}/{path_segment(relation_id)}/v{version:06d}"

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(self.full(path)).type != pafs.FileType.NotFound

    def reserve_version(self, type_name: str, relation_id: object, at_least: int) -> int:
        """Create and claim the first free version folder >= at_least; never reuse one."""
        version = max(at_least, 1)
        while True:
            path = self.backup_dir(type_name, relation_id, version)
            if not self.exists(path):
                self.fs.create_dir(self.full(path), recursive=True)
                marker = self.full(f"{path}/.reserved")
                try:
                    # exclusive claim on local disk; on object stores the catalog's unique
                    # (type, relation_id, version) constraint is the final arbiter
                    import os

                    if isinstance(self.fs, pafs.LocalFileSystem):
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    else:
                        self.fs.open_output_stream(marker).close()
                    return version
                except FileExistsError:
                    pass
            version += 1

    def parquet_writer(self, path: str, schema: pa.Schema) -> ParquetFileWriter:
        return ParquetFileWriter(self, path, schema, self.zstd_level)

    # -- encryption ------------------------------------------------------------------------------

    def encryption_info(self, key_id: str | None = None) -> dict | None:
        """What the manifest records about encryption (no key material), None if plain."""
        key_id = key_id or self.encrypt_key_id
        if key_id is None:
            return None
        return {
            "algorithm": crypto.ALGORITHM,
            "format": crypto.FORMAT,
            "chunk_bytes": CHUNK_SIZE,
            "key_id": key_id,
        }

    def encrypting(self, sink: Sink, key_id: str | None | object = _CURRENT) -> Sink:
        """`sink` wrapped in an EncryptingWriter for `key_id` (default: the store's current
        key id); `sink` itself when there is no key id."""
        key_id = self.encrypt_key_id if key_id is _CURRENT else key_id
        if key_id is None:
            return sink
        try:
            key = self.keyring.key(key_id)
        except DecryptError as exc:
            raise StoreConfigError(f"cannot encrypt: {exc}") from None
        return EncryptingWriter(sink, key_id, key)

    def write_bytes(self, path: str, data: bytes, key_id: str | None | object = _CURRENT) -> None:
        """Write a whole file (encrypted with the store's current key id, or `key_id`)."""
        with self.fs.open_output_stream(self.full(path)) as out:
            sink = self.encrypting(out, key_id)
            sink.write(data)
            if sink is not out:
                sink.close()
        self.sync(path)

    # -- durability ------------------------------------------------------------------------------

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def sync(self, path: str) -> None:
        """A written file's bytes on disk (fsync), before anything relies on them. On an object
        store the completed upload (the stream's close) is the barrier: nothing to do."""
        if self.local:
            fd = os.open(self.full(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def sync_dirs(self, path: str) -> None:
        """The folder `path` and every folder above it up to the store's root fsynced: the
        entries of new files and folders survive a power loss (local disk only)."""
        if not self.local:
            return
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts), -1, -1):
            folder = self.full("/".join(parts[:i]))
            if not os.path.isdir(folder):
                continue
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read_bytes(self, path: str) -> bytes:
        """The stored bytes, as they are (still encrypted if they are)."""
        try:
            with self.fs.open_input_stream(self.full(path)) as src:
                return src.read()
        except FileNotFoundError as exc:
            raise SnapshotError(f"snapshot file {self.full(path)} is missing") from exc

    def read_plain(self, path: str) -> bytes:
        """A whole file, decrypted when it is encrypted (e.g. manifest.json); no manifest check."""
        data = self.read_bytes(path)
        if not crypto.is_encrypted(data):
            return data
        try:
            return crypto.decrypt_bytes(data, self.keyring, f"snapshot file {self.full(path)}")
        except DecryptError as exc:
            raise DecryptionError(str(exc)) from None

    def key_id_of(self, path: str) -> str | None:
        """The key id a stored file is encrypted with (from its header), None if plain."""
        try:
            with self.fs.open_input_stream(self.full(path)) as src:
                return crypto.peek_key_id(src, f"snapshot file {self.full(path)}")
        except FileNotFoundError as exc:
            raise SnapshotError(f"snapshot file {self.full(path)} is missing") from exc
        except DecryptError as exc:
            raise DecryptionError(str(exc)) from None

    def file_digest(self, path: str) -> tuple[str, int]:
        """(sha256, size) of a stored file, read in chunks."""
        digest, size = hashlib.sha256(), 0
        try:
            with self.fs.open_input_stream(self.full(path)) as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError as exc:
            raise SnapshotError(f"snapshot file {self.full(path)} is missing") from exc
        return digest.hexdigest(), size

    # -- checked reading -------------------------------------------------------------------------

    def plaintext(self, path: str, expected: Expected, whole: bool = False) -> Iterator[bytes]:
        """The file's content, decrypted (authenticated chunk by chunk) when `expected` says
        it is encrypted. Once the last piece is out, the stored bytes are checked against
        `expected` (sha256, size). Raises SnapshotError naming the file, table and key id.

        Consume it to the end before using what it gave: the checks come last. `whole`: a
        plain file in one piece (fastest for reading into memory); else pieces of 1 MiB.
        """
        full = self.full(path)
        label = f"snapshot file {full} of table {expected.table}"
        encrypted = bool(getattr(expected, "encrypted", False))
        key_id = getattr(expected, "key_id", None)
        try:
            raw = self.fs.open_input_stream(full)
        except FileNotFoundError as exc:
            raise SnapshotError(f"snapshot file {full} is missing") from exc
        failure: DecryptError | None = None
        with raw:
            src = _HashingReader(raw)
            try:
                if encrypted:
                    yield from crypto.decrypt_stream(src, self.keyring, label, key_id)
                elif whole:
                    yield src.read()
                else:
                    while chunk := src.read(CHUNK_SIZE):
                        yield chunk
            except DecryptError as exc:
                failure = exc
                src.drain()  # finish the sha256: damaged file, or wrong / missing key?
        digest = src.sha256.hexdigest()
        if digest != expected.sha256 or src.size != expected.bytes:
            raise SnapshotError(
                f"{label} does not match its manifest (sha256 {digest[:12]}… vs "
                f"{expected.sha256[:12]}…, {src.size} vs {expected.bytes} bytes"
                + (f"; encrypted with key id {key_id!r}" if encrypted else "")
                + ")"
            )
        if failure is not None:
            message = str(failure)
            if "failed authentication" in message:
                message += (
                    f"; the file matches its manifest's sha256, so the key given for "
                    f"{key_id!r} in {crypto.KEYS_ENV} is not the key it was encrypted with"
                )
            raise DecryptionError(message)

    def read_checked(self, path: str, expected: Expected) -> pa.Buffer:
        """The whole file's (decrypted) content, checked (see `plaintext`)."""
        first: bytes | None = None
        out: bytearray | None = None
        for piece in self.plaintext(path, expected, whole=True):
            if first is None and out is None:
                first = piece  # a plain file is one piece: no copy
            else:
                if out is None:
                    out, first = bytearray(first), None
                out += piece  # decrypted chunks: appended as they come, held once
        return pa.py_buffer(out if out is not None else (first or b""))

    def check_file(self, path: str, expected: Expected) -> None:
        """sha256 and size of the stored bytes, and (when encrypted) that every chunk
        authenticates with its key: one streaming pass, one chunk in memory."""
        for _ in self.plaintext(path, expected):
            pass

    def parquet_file(self, path: str) -> pq.ParquetFile:
        """A snapshot file opened for reading; an encrypted one is decrypted into memory."""
        full = self.full(path)
        try:
            f = self.fs.open_input_file(full)
        except FileNotFoundError as exc:
            raise SnapshotError(f"snapshot file {full} is missing") from exc
        if not crypto.is_encrypted(f.read_at(len(crypto.MAGIC), 0)):
            return pq.ParquetFile(f)
        out = bytearray()
        try:
            f.seek(0)
            for piece in crypto.decrypt_stream(f, self.keyring, f"snapshot file {full}"):
                out += piece
        except DecryptError as exc:
            raise DecryptionError(str(exc)) from None
        finally:
            f.close()
        return pq.ParquetFile(pa.BufferReader(pa.py_buffer(out)))

    # -- key rotation ----------------------------------------------------------------------------

    def reencrypt(self, path: str, expected: Expected, key_id: str) -> tuple[str, int]:
        """Write ``path + ROTATE_SUFFIX``: the file's content encrypted with `key_id`, streamed
        (read with whichever known key it has, checked against `expected`), then read back and
        checked (authenticates with `key_id`, same plaintext). The original is not touched.
        Returns (sha256, size) of the new file; on any failure the new file is removed."""
        tmp = path + ROTATE_SUFFIX
        plain = hashlib.sha256()
        sink = HashingSink(self.fs.open_output_stream(self.full(tmp)))
        try:
            writer = self.encrypting(sink, key_id)
            for piece in self.plaintext(path, expected):
                plain.update(piece)
                writer.write(piece)
            writer.close()
            sink.close()
            self.sync(tmp)
            new = Expected(expected.table, sink.sha256.hexdigest(), sink.size, True, key_id)
            again = hashlib.sha256()
            for piece in self.plaintext(tmp, new):
                again.update(piece)
            if again.digest() != plain.digest():
                raise SnapshotError(
                    f"the copy of snapshot file {self.full(path)} re-encrypted with key id "
                    f"{key_id!r} does not read back the same; the original is left as it was"
                )
        except BaseException:
            sink.close()
            self.delete_file(tmp)
            raise
        return new.sha256, new.bytes

    def replace(self, src: str, dst: str) -> None:
        """Move `src` over `dst` (a rename on local disk, made durable)."""
        self.fs.move(self.full(src), self.full(dst))
        self.sync_dirs(dst.rsplit("/", 1)[0] if "/" in dst else "")

    def delete_file(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.full(path))

    def delete_dir(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_dir(self.full(path))
