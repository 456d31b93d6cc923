"""Authenticated, streaming encryption of snapshot files: AES-256-GCM in the HTDENC1 format.

A file is a header, then chunks of at most ``chunk_size`` plaintext bytes (1 MiB), each sealed
on its own, so that writing and checking need one chunk of memory whatever the file's size:

    header   b"HTDENC1" | key id length (1 byte) | key id (ASCII) | chunk size (u32 BE)
             | salt (32 random bytes) | nonce prefix (8 random bytes)
    chunks   AES-256-GCM(file key, nonce = prefix | u32 BE chunk index,
                         aad = header | u64 BE chunk index | final flag (1 byte))
             every chunk holds exactly chunk_size bytes except the last, which may be shorter
             (even empty) and is the only one sealed with the final flag set.

The file key is HKDF-SHA256(master key, salt, b"HTDENC1 file key" | key id): a fresh key per
file, so nonces never repeat under one key. The AAD binds the header (hence the key id), the
chunk's index and whether it is the last one, so a changed byte, a wrong key, chunks that are
reordered, dropped or appended, and a file cut short (even at a chunk boundary) all fail
authentication.

Keys come from the environment only (``HTD_ENCRYPTION_KEYS``, ``HTD_ENCRYPTION_KEY_ID``); no
message, repr or manifest ever holds key material, only key ids.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from collections.abc import Iterator
from typing import NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from htd_pipelines import settings

KEYS_ENV = settings.ENCRYPTION_KEYS.name
KEY_ID_ENV = settings.ENCRYPTION_KEY_ID.name

MAGIC = b"HTDENC1"
FORMAT = "HTDENC1"
ALGORITHM = "AES-256-GCM"
CHUNK_SIZE = 1 << 20  # plaintext bytes per chunk
MAX_CHUNK_SIZE = 16 << 20  # a reader refuses larger chunks (bounded memory on damaged headers)
TAG_SIZE = 16
SALT_SIZE = 32
PREFIX_SIZE = 8
KEY_SIZE = 32
KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FILE_KEY_INFO = b"HTDENC1 file key "


class CryptoError(RuntimeError):
    """Encryption is misconfigured, or a file cannot be decrypted. Names ids, never keys."""


class KeyConfigError(CryptoError):
    """HTD_ENCRYPTION_KEYS / HTD_ENCRYPTION_KEY_ID are malformed or inconsistent."""


class DecryptError(CryptoError):
    """A file is not a valid HTDENC1 file for the keys at hand (wrong or missing key,
    tampered, truncated, reordered)."""


class Keyring:
    """Key ids -> 32-byte keys, and the id that encrypts new files (None: no encryption).

    The keys are kept out of repr() and str(); only ids are ever shown.
    """

    __slots__ = ("_keys", "current_id")

    def __init__(
        self, keys: dict[str, bytes] | None = None, current_id: str | None = None
    ) -> None:
        keys = dict(keys or {})
        for key_id, key in keys.items():
            if not KEY_ID.match(key_id):
                raise KeyConfigError(
                    f"key id {key_id!r} is not valid (1-64 letters, digits, '.', '_', '-')"
                )
            if len(key) != KEY_SIZE:
                raise KeyConfigError(
                    f"key {key_id!r} is {len(key)} bytes long, a key must be {KEY_SIZE} bytes"
                )
        if current_id is not None and current_id not in keys:
            raise KeyConfigError(
                f"{KEY_ID_ENV} is {current_id!r}, which is not a key id in {KEYS_ENV} "
                f"(key ids there: {_ids(keys)})"
            )
        self._keys = keys
        self.current_id = current_id

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Keyring:
        """Parse ``HTD_ENCRYPTION_KEYS`` (``id:base64key,...``) and ``HTD_ENCRYPTION_KEY_ID``."""
        env = os.environ if environ is None else environ
        keys: dict[str, bytes] = {}
        for n, raw_entry in enumerate((env.get(KEYS_ENV) or "").split(","), start=1):
            entry = raw_entry.strip()
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            where = f"{KEYS_ENV} entry {n}" + (f" (key id {key_id!r})" if sep else "")
            if not sep or not key_id:
                raise KeyConfigError(f"{where} is not of the form keyid:base64key")
            if not KEY_ID.match(key_id):
                raise KeyConfigError(
                    f"{where}: the key id is not valid (1-64 letters, digits, '.', '_', '-')"
                )
            if key_id in keys:
                raise KeyConfigError(f"{where}: key id {key_id!r} is given twice")
            key = _decode_key(encoded.strip())
            if key is None:
                raise KeyConfigError(f"{where}: the key is not valid base64")
            if len(key) != KEY_SIZE:
                raise KeyConfigError(
                    f"{where}: the key decodes to {len(key)} bytes, a key must be {KEY_SIZE} "
                    "bytes (base64 of 32 random bytes)"
                )
            keys[key_id] = key
        current = (env.get(KEY_ID_ENV) or "").strip() or None
        return cls(keys, current)

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    def has(self, key_id: str) -> bool:
        return key_id in self._keys

    def key(self, key_id: str, name: str = "a file") -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise DecryptError(
                f"{name} is encrypted with key id {key_id!r}, which is not in {KEYS_ENV} "
                f"(key ids available: {_ids(self._keys)})"
            ) from None

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids}, current_id={self.current_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:  # never pickle key material
        raise TypeError("a Keyring is not picklable: keys come from the environment only")


def _ids(keys: dict) -> str:
    return ", ".join(sorted(keys)) or "none"


def _decode_key(text: str) -> bytes | None:
    """Standard or URL-safe base64, strictly (no stray characters)."""
    try:
        raw = text.encode("ascii").translate(bytes.maketrans(b"-_", b"+/"))
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def new_key() -> str:
    """A fresh key, base64 (for ``HTD_ENCRYPTION_KEYS``)."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode("ascii")


# ---------------------------------------------------------------------------------------------
# the format
# ---------------------------------------------------------------------------------------------


def _file_aead(key: bytes, salt: bytes, key_id: str) -> AESGCM:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=salt,
        info=_FILE_KEY_INFO + key_id.encode("ascii"),
    )
    return AESGCM(hkdf.derive(key))


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, 1 if final else 0)


class Sink(Protocol):
    def write(self, data) -> int: ...  # noqa: ANN001 - any bytes-like object

    def flush(self) -> None: ...

    def close(self) -> None: ...


class EncryptingWriter:
    """A write-only file object: plaintext in, HTDENC1 out to `sink`, one chunk at a time.

    Holds at most one chunk (plus the piece being written) in memory. ``tell()`` is the
    plaintext position (what a Parquet writer expects); ``close()`` seals the final chunk and
    closes the sink.
    """

    def __init__(self, sink: Sink, key_id: str, key: bytes, chunk_size: int = CHUNK_SIZE) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes")
        if not KEY_ID.match(key_id):
            raise KeyConfigError(f"key id {key_id!r} is not valid")
        self.key_id = key_id
        self._sink = sink
        self._chunk = chunk_size
        salt, self._prefix = os.urandom(SALT_SIZE), os.urandom(PREFIX_SIZE)
        kid = key_id.encode("ascii")
        self._header = (
            MAGIC + bytes([len(kid)]) + kid + struct.pack(">I", chunk_size) + salt + self._prefix
        )
        self._aead = _file_aead(key, salt, key_id)
        self._buf = bytearray()
        self._index = 0
        self.size = 0  # plaintext bytes written
        self.closed = False
        sink.write(self._header)

    def _seal(self, data, final: bool) -> None:  # noqa: ANN001 - any bytes-like object
        if self._index > 0xFFFFFFFF:
            raise CryptoError("file too large for HTDENC1 (2^32 chunks)")
        self._sink.write(
            self._aead.encrypt(
                _nonce(self._prefix, self._index), data, _aad(self._header, self._index, final)
            )
        )
        self._index += 1

    def write(self, data) -> int:  # noqa: ANN001 - any bytes-like object
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        n = view.nbytes
        self.size += n
        self._buf += view
        if len(self._buf) > self._chunk:  # keep the last full chunk: it may be the final one
            start = 0
            with memoryview(self._buf) as mv:
                while len(self._buf) - start > self._chunk:
                    self._seal(mv[start : start + self._chunk], final=False)
                    start += self._chunk
            del self._buf[:start]
        return n

    def flush(self) -> None:
        self._sink.flush()

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self._seal(bytes(self._buf), final=True)
        self._buf = bytearray()
        self.closed = True
        self._sink.close()


def encrypt_bytes(data: bytes, key_id: str, key: bytes, chunk_size: int = CHUNK_SIZE) -> bytes:
    """Small payloads (a manifest) in one go."""

    class _Collect:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, b) -> int:  # noqa: ANN001 - any bytes-like object
            self.parts.append(bytes(b))
            return len(b)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    out = _Collect()
    w = EncryptingWriter(out, key_id, key, chunk_size)
    w.write(data)
    w.close()
    return b"".join(out.parts)


class Source(Protocol):
    def read(self, n: int) -> bytes: ...


def _read_exact(src: Source, n: int) -> bytes:
    first = src.read(n)
    if len(first) == n or not first:
        return bytes(first)
    parts = [first]
    got = len(first)
    while got < n:
        more = src.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def is_encrypted(prefix: bytes) -> bool:
    """Whether a file starting with these bytes is an HTDENC1 file."""
    return bytes(prefix[: len(MAGIC)]) == MAGIC


def read_header(src: Source, name: str) -> tuple[bytes, str, int, bytes, bytes]:
    """(header bytes, key id, chunk size, salt, nonce prefix) of an HTDENC1 stream."""
    magic = _read_exact(src, len(MAGIC) + 1)
    if magic[: len(MAGIC)] != MAGIC:
        raise DecryptError(f"{name} is not an encrypted snapshot file (no HTDENC1 header)")
    if len(magic) < len(MAGIC) + 1:
        raise DecryptError(f"{name} is truncated (the HTDENC1 header is cut short)")
    kid_len = magic[-1]
    rest = _read_exact(src, kid_len + 4 + SALT_SIZE + PREFIX_SIZE)
    if len(rest) < kid_len + 4 + SALT_SIZE + PREFIX_SIZE:
        raise DecryptError(f"{name} is truncated (the HTDENC1 header is cut short)")
    try:
        key_id = rest[:kid_len].decode("ascii")
    except UnicodeDecodeError:
        key_id = ""
    if not KEY_ID.match(key_id):
        raise DecryptError(f"{name} has a damaged HTDENC1 header (invalid key id)")
    (chunk_size,) = struct.unpack(">I", rest[kid_len : kid_len + 4])
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptError(
            f"{name} (key id {key_id!r}) has a damaged HTDENC1 header (chunk size {chunk_size})"
        )
    salt = rest[kid_len + 4 : kid_len + 4 + SALT_SIZE]
    prefix = rest[kid_len + 4 + SALT_SIZE :]
    return magic + rest, key_id, chunk_size, salt, prefix


def peek_key_id(src: Source, name: str = "file") -> str | None:
    """The key id of an HTDENC1 stream, None when it is not encrypted (reads the header)."""
    start = _read_exact(src, len(MAGIC))
    if start != MAGIC:
        return None

    class _Again:
        def __init__(self) -> None:
            self.first = start

        def read(self, n: int) -> bytes:
            if self.first:
                out, self.first = self.first[:n], self.first[n:]
                return out
            return src.read(n)

    return read_header(_Again(), name)[1]


def decrypt_stream(
    src: Source, keyring: Keyring, name: str, expected_key_id: str | None = None
) -> Iterator[bytes]:
    """Plaintext chunks of an HTDENC1 stream, each authenticated before it is yielded.

    Raises DecryptError naming `name` and the key id (never the key): key id not available,
    key id other than `expected_key_id`, wrong key, tampered, reordered or truncated chunks.
    """
    header, key_id, chunk_size, salt, prefix = read_header(src, name)
    if expected_key_id is not None and key_id != expected_key_id:
        raise DecryptError(
            f"{name} is encrypted with key id {key_id!r}, its manifest says {expected_key_id!r}"
        )
    aead = _file_aead(keyring.key(key_id, name), salt, key_id)
    block = chunk_size + TAG_SIZE
    index = 0
    current = _read_exact(src, block)
    while True:
        if len(current) == block:
            following = _read_exact(src, block)
            final = not following
        else:
            following, final = b"", True
        if len(current) < TAG_SIZE:
            raise DecryptError(
                f"{name} (key id {key_id!r}) is truncated: chunk {index} is cut short"
            )
        if index > 0xFFFFFFFF:
            raise DecryptError(f"{name} (key id {key_id!r}) has too many chunks")
        try:
            plain = aead.decrypt(_nonce(prefix, index), current, _aad(header, index, final))
        except InvalidTag:
            raise DecryptError(
                f"{name} failed authentication with key id {key_id!r} at chunk {index}"
                + (" (the last one read)" if final else "")
                + ": wrong key for that id, or the file was tampered with, reordered or "
                "truncated"
            ) from None
        yield plain
        if final:
            return
        current = following
        index += 1


def decrypt_bytes(
    data: bytes, keyring: Keyring, name: str, expected_key_id: str | None = None
) -> bytes:
    """Small payloads in one go (reads from memory)."""
    import io

    return b"".join(decrypt_stream(io.BytesIO(data), keyring, name, expected_key_id))
