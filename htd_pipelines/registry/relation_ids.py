"""What a relation id (a session's root key, as text) may be, and how it is written where
characters are restricted: a snapshot folder name and a Dagster tag value.

- `parse_int_id`: an id for an integer root key is its canonical decimal text, nothing else
  (Python's int() also takes '1_2', '+13', ' 7', Arabic-Indic and full-width digits).
- `path_segment`: a folder name for the id, collision-free and traversal-proof. A plain id
  (``[A-Za-z0-9_-]``, at most 100 characters) is its own folder name, as before; any other id
  is ``~`` + its percent-encoded UTF-8 (``[A-Za-z0-9._-]`` kept); one longer than 120
  characters is cut and ends with ``~`` + 32 hex digits of its sha256.
- `tag_value`: a valid Dagster tag value (``[A-Za-z0-9_.-]``, at most 63 characters) as it is;
  anything else as a readable ASCII form plus ``-`` and 12 hex digits of its sha256.

The id itself is kept where it is not restricted: the manifest, the catalog, the run config.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_LENGTH = 512  # characters; the catalog's relation_id columns (store/catalog.py)
TAG_LIMIT = 63  # Dagster: a tag value has at most 63 characters of [A-Za-z0-9_.-]

_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)", re.ASCII)
_INT64 = (-(2**63), 2**63 - 1)
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)
_SEGMENT_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_SEGMENT_MAX = 120
_VALID_TAG = re.compile(r"[A-Za-z0-9_.-]{0,63}", re.ASCII)
_NOT_TAG = re.compile(r"[^A-Za-z0-9_.-]+", re.ASCII)


class RelationIdError(ValueError):
    """A relation id that cannot name a session; the message names the id and the key column."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def check_text(text: str, column: str) -> str:
    """Any id: at most MAX_LENGTH characters, no NUL (no database stores it in a key)."""
    if len(text) > MAX_LENGTH:
        raise RelationIdError(
            f"relation id {_shown(text)} for {column} has {len(text)} characters: "
            f"at most {MAX_LENGTH} are kept in the catalog"
        )
    if "\x00" in text:
        raise RelationIdError(f"relation id {_shown(text)} for {column} contains a NUL character")
    return text


def parse_int_id(text: object, column: str, *, unsigned: bool = False) -> int:
    """The integer an id for an integer key `column` names: only its canonical decimal text
    (optional '-', ASCII digits, no leading zeros but '0' itself, within 64 bits: signed, or
    0 to 2^64 - 1 for an unsigned key)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and _CANONICAL_INT.fullmatch(text) and text != "-0":
        value = int(text)
    else:
        raise RelationIdError(
            f"relation id {_shown(str(text))} is not a valid value of {column} (integer): "
            "write it in decimal digits, an optional leading '-', no leading zeros"
        )
    low, high = (0, 2**64 - 1) if unsigned else _INT64
    if not low <= value <= high:
        kind = "unsigned 64-bit integer" if unsigned else "64-bit integer"
        raise RelationIdError(
            f"relation id {_shown(str(text))} is out of range for {column} ({kind})"
        )
    return value


def path_segment(relation_id: object) -> str:
    """The id's folder name: one path segment, never '.' or '..', never two ids in one."""
    text = str(relation_id)
    if _PLAIN_SEGMENT.fullmatch(text):
        return text  # the folder of a plain id is unchanged: older backups keep their paths
    encoded = "".join(
        chr(b) if b in _SEGMENT_KEEP else f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass")
    )
    if len(encoded) + 1 <= _SEGMENT_MAX:
        return "~" + encoded  # '~' is escaped inside: the two forms never meet
    cut = encoded[:80]
    cut = cut[: cut.rfind("%")] if "%" in cut[-2:] else cut  # no half escape
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"~{cut}~{digest}"


def tag_value(text: object, limit: int = TAG_LIMIT) -> str:
    """`text` as a Dagster tag value of at most `limit` characters: itself if it is one;
    else its readable ASCII part (accents dropped, other runs of characters as '_'), cut to
    fit, then '-' and 12 hex digits of the sha256 of the whole text."""
    text = str(text)
    if len(text) <= limit and _VALID_TAG.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    ascii_text = "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    )
    readable = _NOT_TAG.sub("_", ascii_text).strip("_")[: max(limit - 13, 0)]
    return f"{readable}-{digest}" if readable else digest
