"""Unit tests of HTDENC1 encryption (htd_pipelines.store.crypto): keys from an environ dict,
bytes in memory, no store, no Dagster."""

from __future__ import annotations

import base64
import io
import os
import pickle
import struct

import pytest

from htd_pipelines.store.crypto import (
    KEY_SIZE,
    MAGIC,
    SALT_SIZE,
    TAG_SIZE,
    CryptoError,
    DecryptError,
    EncryptingWriter,
    KeyConfigError,
    Keyring,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    is_encrypted,
    new_key,
    peek_key_id,
)

KEYS = "HTD_ENCRYPTION_KEYS"
KEY_ID = "HTD_ENCRYPTION_KEY_ID"


def raw(b64: str) -> bytes:
    return base64.b64decode(b64)


@pytest.fixture
def k1() -> str:
    return new_key()


@pytest.fixture
def ring(k1: str) -> Keyring:
    return Keyring.from_env({KEYS: f"k1:{k1}", KEY_ID: "k1"})


class Sink:
    """A sink that keeps its bytes after close() (io.BytesIO forgets them)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, b: bytes) -> int:
        assert not self.closed
        self.data += b
        return len(b)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def header_len(key_id: str) -> int:
    return len(MAGIC) + 1 + len(key_id) + 4 + SALT_SIZE + 8


# -- keys -----------------------------------------------------------------------------------------


def test_new_key_is_base64_of_32_random_bytes() -> None:
    a, b = new_key(), new_key()
    assert len(raw(a)) == KEY_SIZE
    assert a != b


def test_from_env_parses_several_keys_and_the_current_id() -> None:
    a, b = os.urandom(32), os.urandom(32)
    urlsafe = base64.urlsafe_b64encode(b).decode()
    env = {
        KEYS: f" old:{base64.b64encode(a).decode()} ,, new-2.x : {urlsafe} ,",
        KEY_ID: " new-2.x ",
    }
    ring = Keyring.from_env(env)
    assert ring.ids == ["new-2.x", "old"]
    assert ring.current_id == "new-2.x"
    assert ring.key("old") == a
    assert ring.key("new-2.x") == b
    assert ring.has("old") and not ring.has("other")


def test_from_env_without_keys_means_no_encryption() -> None:
    for env in ({}, {KEYS: ""}, {KEYS: "  ", KEY_ID: " "}):
        ring = Keyring.from_env(env)
        assert ring.ids == [] and ring.current_id is None


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch, k1: str) -> None:
    monkeypatch.setenv(KEYS, f"env-key:{k1}")
    monkeypatch.delenv(KEY_ID, raising=False)
    ring = Keyring.from_env()
    assert ring.ids == ["env-key"] and ring.current_id is None


def bad_env_message(env: dict[str, str]) -> str:
    with pytest.raises(KeyConfigError) as info:
        Keyring.from_env(env)
    return str(info.value)


@pytest.mark.parametrize(
    ("entries", "fragments"),
    [
        pytest.param("k1:{good},no-colon-here", ["entry 2", "keyid:base64key"], id="no-colon"),
        pytest.param("k1:{good},:{good}", ["entry 2", "keyid:base64key"], id="empty-id"),
        pytest.param(
            "bad id!:{good}", ["entry 1", "'bad id!'", "key id is not valid"], id="bad-id"
        ),
        pytest.param(
            "k1:{good},k2:not*base64!", ["entry 2", "'k2'", "not valid base64"], id="bad-base64"
        ),
        pytest.param("k1:{short}", ["entry 1", "'k1'", "16 bytes", "32"], id="short-key"),
        pytest.param("k1:{good},k1:{other}", ["entry 2", "'k1'", "given twice"], id="dup-id"),
    ],
)
def test_malformed_keys_name_the_entry_and_never_the_key(
    entries: str, fragments: list[str]
) -> None:
    good, other = new_key(), new_key()
    short = base64.b64encode(os.urandom(16)).decode()
    text = entries.format(good=good, other=other, short=short)
    message = bad_env_message({KEYS: text})
    assert message.startswith(KEYS), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    for secret in (good, other, short, "not*base64!"):
        assert secret not in message


def test_current_id_must_be_one_of_the_keys(k1: str) -> None:
    message = bad_env_message({KEYS: f"k1:{k1}", KEY_ID: "k2"})
    assert KEY_ID in message and "'k2'" in message and "k1" in message
    assert k1 not in message


def test_keyring_constructor_checks_key_length() -> None:
    with pytest.raises(KeyConfigError, match="'k' is 31 bytes"):
        Keyring({"k": os.urandom(31)})


def test_keyring_never_shows_or_pickles_keys(ring: Keyring, k1: str) -> None:
    for text in (repr(ring), str(ring), f"{ring}"):
        assert "k1" in text
        assert k1 not in text
        assert repr(raw(k1)) not in text
    with pytest.raises(TypeError):
        pickle.dumps(ring)


def test_missing_key_id_is_a_decrypt_error_naming_the_ids(ring: Keyring) -> None:
    with pytest.raises(DecryptError, match=r"'nope'.*key ids available: k1"):
        ring.key("nope", "some file")


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 48, 1000])
def test_encrypt_decrypt_round_trip(ring: Keyring, k1: str, size: int) -> None:
    data = os.urandom(size)
    sealed = encrypt_bytes(data, "k1", raw(k1), chunk_size=16)
    assert is_encrypted(sealed)
    chunks = max(1, -(-size // 16))  # a full last chunk is the final one, never an empty extra
    assert len(sealed) == header_len("k1") + size + chunks * TAG_SIZE
    assert decrypt_bytes(sealed, ring, "f.parquet") == data
    assert decrypt_bytes(sealed, ring, "f.parquet", expected_key_id="k1") == data


def test_round_trip_with_the_default_chunk_size(ring: Keyring, k1: str) -> None:
    data = os.urandom(3 * (1 << 20) + 5)
    assert decrypt_bytes(encrypt_bytes(data, "k1", raw(k1)), ring, "big") == data


def test_ciphertext_hides_the_plaintext_and_is_fresh_each_time(k1: str) -> None:
    data = b"session 42 secret note " * 10
    one = encrypt_bytes(data, "k1", raw(k1))
    two = encrypt_bytes(data, "k1", raw(k1))
    assert one != two  # random salt and nonce prefix per file
    assert b"secret note" not in one
    assert raw(k1) not in one


def test_encrypting_writer_streams_many_small_writes(ring: Keyring, k1: str) -> None:
    sink = Sink()
    writer = EncryptingWriter(sink, "k1", raw(k1), chunk_size=64)
    pieces = [os.urandom(n) for n in (0, 1, 63, 64, 65, 200, 7)]
    for piece in pieces:
        assert writer.write(piece) == len(piece)
    plain = b"".join(pieces)
    assert writer.tell() == len(plain)  # the plaintext position
    assert not sink.closed
    writer.close()
    assert sink.closed
    writer.close()  # closing twice is harmless
    with pytest.raises(ValueError):
        writer.write(b"more")
    assert decrypt_bytes(bytes(sink.data), ring, "stream") == plain


def test_encrypting_writer_accepts_memoryview_and_bytearray(ring: Keyring, k1: str) -> None:
    sink = Sink()
    writer = EncryptingWriter(sink, "k1", raw(k1), chunk_size=8)
    writer.write(memoryview(b"abcdefghij"))
    writer.write(bytearray(b"klm"))
    writer.close()
    assert decrypt_bytes(bytes(sink.data), ring, "f") == b"abcdefghijklm"


def test_encrypting_writer_refuses_bad_parameters(k1: str) -> None:
    with pytest.raises(ValueError):
        EncryptingWriter(Sink(), "k1", raw(k1), chunk_size=0)
    with pytest.raises(KeyConfigError):
        EncryptingWriter(Sink(), "bad id", raw(k1))


def test_decrypt_stream_yields_the_plaintext_chunk_by_chunk(ring: Keyring, k1: str) -> None:
    data = os.urandom(40)
    sealed = encrypt_bytes(data, "k1", raw(k1), chunk_size=16)
    assert list(decrypt_stream(io.BytesIO(sealed), ring, "f")) == [
        data[:16],
        data[16:32],
        data[32:],
    ]


def test_peek_key_id_and_is_encrypted(k1: str) -> None:
    sealed = encrypt_bytes(b"x", "key.2024-01", raw(k1))
    assert peek_key_id(io.BytesIO(sealed)) == "key.2024-01"
    assert peek_key_id(io.BytesIO(b"PAR1\x00\x00\x00")) is None
    assert peek_key_id(io.BytesIO(b"")) is None
    assert is_encrypted(sealed[:7])
    assert not is_encrypted(b"PAR1....")
    assert not is_encrypted(b"HTDENC")  # too short to be the magic


# -- refusals -------------------------------------------------------------------------------------


def refused(data: bytes, ring: Keyring, **kwargs: object) -> str:
    with pytest.raises(DecryptError) as info:
        decrypt_bytes(data, ring, "t.parquet", **kwargs)
    message = str(info.value)
    assert "t.parquet" in message
    return message


def test_wrong_key_for_the_id_is_refused(k1: str) -> None:
    sealed = encrypt_bytes(b"hello", "k1", raw(k1))
    impostor = new_key()
    message = refused(sealed, Keyring.from_env({KEYS: f"k1:{impostor}"}))
    assert "failed authentication with key id 'k1'" in message
    assert impostor not in message and k1 not in message


def test_unknown_key_id_is_refused(k1: str) -> None:
    sealed = encrypt_bytes(b"hello", "k1", raw(k1))
    message = refused(sealed, Keyring.from_env({KEYS: f"other:{new_key()}"}))
    assert "'k1'" in message and "other" in message


def test_key_id_other_than_the_manifest_says_is_refused(ring: Keyring, k1: str) -> None:
    sealed = encrypt_bytes(b"hello", "k1", raw(k1))
    message = refused(sealed, ring, expected_key_id="k0")
    assert "'k1'" in message and "'k0'" in message


def test_every_flipped_bit_is_refused(ring: Keyring, k1: str) -> None:
    sealed = encrypt_bytes(os.urandom(40), "k1", raw(k1), chunk_size=16)
    # every byte after the magic: key id length, key id, chunk size, salt, prefix, chunks
    for i in range(len(MAGIC), len(sealed)):
        damaged = bytearray(sealed)
        damaged[i] ^= 0x01
        with pytest.raises(DecryptError):
            decrypt_bytes(bytes(damaged), ring, "t.parquet")


def test_damaged_magic_is_not_an_encrypted_file(ring: Keyring, k1: str) -> None:
    sealed = bytearray(encrypt_bytes(b"hello", "k1", raw(k1)))
    sealed[0] ^= 0x01
    assert "no HTDENC1 header" in refused(bytes(sealed), ring)


def test_truncation_is_refused_even_at_a_chunk_boundary(ring: Keyring, k1: str) -> None:
    sealed = encrypt_bytes(os.urandom(48), "k1", raw(k1), chunk_size=16)
    block = 16 + TAG_SIZE
    head = header_len("k1")
    assert len(sealed) == head + 3 * block
    for cut in (
        head + 2 * block,  # the last chunk dropped: the new last one is not sealed final
        head + block,
        head,  # no chunk at all
        len(sealed) - 1,  # mid-chunk
        head + 5,  # inside the first chunk, shorter than a tag
        head - 3,  # inside the header
        len(MAGIC) + 1,
    ):
        with pytest.raises(DecryptError):
            decrypt_bytes(sealed[:cut], ring, "t.parquet")


def test_reordered_and_appended_chunks_are_refused(ring: Keyring, k1: str) -> None:
    sealed = encrypt_bytes(os.urandom(48), "k1", raw(k1), chunk_size=16)
    block = 16 + TAG_SIZE
    head = header_len("k1")
    chunks = [sealed[head + i * block : head + (i + 1) * block] for i in range(3)]
    swapped = sealed[:head] + chunks[1] + chunks[0] + chunks[2]
    refused(swapped, ring)
    refused(sealed + chunks[2], ring)  # a second final chunk
    refused(sealed + chunks[0], ring)


def test_chunks_from_another_file_are_refused(ring: Keyring, k1: str) -> None:
    one = encrypt_bytes(os.urandom(16), "k1", raw(k1), chunk_size=16)
    two = encrypt_bytes(os.urandom(16), "k1", raw(k1), chunk_size=16)
    head = header_len("k1")
    refused(one[:head] + two[head:], ring)


def test_a_tampered_chunk_is_never_yielded(ring: Keyring, k1: str) -> None:
    data = os.urandom(48)
    sealed = bytearray(encrypt_bytes(data, "k1", raw(k1), chunk_size=16))
    block = 16 + TAG_SIZE
    sealed[header_len("k1") + 2 * block + 3] ^= 0x80  # inside the third chunk
    got: list[bytes] = []
    with pytest.raises(DecryptError, match="at chunk 2"):
        for piece in decrypt_stream(io.BytesIO(bytes(sealed)), ring, "t.parquet"):
            got.append(piece)
    assert b"".join(got) == data[:32]


def test_damaged_chunk_size_in_header_is_refused(ring: Keyring, k1: str) -> None:
    sealed = bytearray(encrypt_bytes(b"hello", "k1", raw(k1)))
    at = len(MAGIC) + 1 + len("k1")
    sealed[at : at + 4] = struct.pack(">I", 0)
    assert "chunk size 0" in refused(bytes(sealed), ring)


def test_decrypt_errors_are_crypto_errors() -> None:
    assert issubclass(DecryptError, CryptoError)
    assert issubclass(KeyConfigError, CryptoError)
