"""The snapshot store: versioned Parquet files per session under HTD_SNAPSHOT_URI.

Layout: ``<root>/<type>/<relation_id>/v<version:06d>/<table>.parquet`` plus ``manifest.json``.
Paths go through pyarrow's filesystem layer, so a local folder and object storage
(``s3://bucket/prefix``) share one code path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SAFE_PART = re.compile(r"[^A-Za-z0-9._=-]")


class SnapshotError(RuntimeError):
    """A snapshot file is missing, damaged or does not match its manifest."""


def safe_part(value: object) -> str:
    """A relation id or table name as one path segment (anything unusual is %-escaped)."""
    return SAFE_PART.sub(lambda m: f"%{ord(m.group()):02X}", str(value))


class HashingSink:
    """A write-only file object that counts and hashes the bytes it forwards."""

    def __init__(self, stream: pa.NativeFile) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:  # noqa: ANN001
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


@dataclass(frozen=True)
class WrittenFile:
    path: str
    rows: int
    size: int
    sha256: str


class ParquetFileWriter:
    """Streams record batches into one zstd Parquet file, hashing as it writes."""

    def __init__(self, store: SnapshotStore, path: str, schema: pa.Schema, zstd_level: int) -> None:
        self.path = path
        self._sink = HashingSink(store.fs.open_output_stream(store.full(path)))
        self._writer = pq.ParquetWriter(
            self._sink,
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
        self._sink.close()
        return WrittenFile(self.path, self.rows, self._sink.size, self._sink.sha256.hexdigest())


class SnapshotStore:
    def __init__(self, uri: str, zstd_level: int = 1) -> None:
        self.uri = uri
        self.zstd_level = zstd_level
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
        return f"{safe_part(type_name)}/{safe_part(relation_id)}/v{version:06d}"

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

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(self.full(path)) as out:
            out.write(data)

    def read_bytes(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.full(path)) as src:
                return src.read()
        except FileNotFoundError as exc:
            raise SnapshotError(f"snapshot file {self.full(path)} is missing") from exc

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

    def parquet_file(self, path: str) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(self.fs.open_input_file(self.full(path)))
        except FileNotFoundError as exc:
            raise SnapshotError(f"snapshot file {self.full(path)} is missing") from exc

    def delete_dir(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_dir(self.full(path))
