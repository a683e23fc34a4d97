"""Item ids ↔ WebDataset sample keys. Pure: strings in, strings out.

A WebDataset tar groups members into samples by the part of the member name before the first
dot (``webdataset``'s ``base_plus_ext`` and the same regex in ``datasets``' WebDataset builder),
so a key must hold no dot. Readers also skip members that look like metadata or hidden files:
``datasets`` drops names starting with ``.`` or ``__``, ``webdataset`` names matching
``__*__``. A ``/`` would put the member in a sub-folder of the tar.

The encoding keeps ``[A-Za-z0-9-]`` as it is (so Unsplash ids and hex content hashes stay
readable) and writes every other UTF-8 byte, ``_`` included, as ``_`` plus two lowercase hex
digits: ``.`` → ``_2e``, ``_`` → ``_5f``, ``é`` → ``_c3_a9``. Because ``_`` is always followed by
hex, a key never holds ``__`` and never starts with ``.``; the encoding is one-to-one, and
``decode_key`` accepts only canonical keys (``encode_key(decode_key(k)) == k``), so two spellings
can never name the same item.
"""

from __future__ import annotations

import re

from ..errors import PermanentError

ESCAPE = "_"
# Long enough for any id we publish (the per-item layout caps ids at 128 chars); short enough that
# ``<key>.<ext>`` stays a legal file name (255 bytes) for a user who extracts a tar to disk.
MAX_KEY_LEN = 200
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_KEY_RE = re.compile(r"^(?:[A-Za-z0-9-]|_[0-9a-f]{2})+$")


def encode_key(item_id: str) -> str:
    """The WebDataset key of an item id: no dot, no slash, no ``__``, reversible by ``decode_key``.

    Raises ``PermanentError`` (reason ``bad_id``) for an empty id, one that is not valid
    Unicode text (lone surrogates) or one whose key would exceed ``MAX_KEY_LEN``.
    """
    if not isinstance(item_id, str) or not item_id:
        raise PermanentError(f"item id {item_id!r} is empty or not text", reason="bad_id")
    out: list[str] = []
    for char in item_id:
        if char in _PLAIN:
            out.append(char)
            continue
        try:
            raw = char.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PermanentError(f"item id {item_id!r} is not valid Unicode text", reason="bad_id") from exc
        out.extend(f"{ESCAPE}{byte:02x}" for byte in raw)
    key = "".join(out)
    if len(key) > MAX_KEY_LEN:
        raise PermanentError(
            f"item id {item_id[:40]!r}… is too long for a shard key ({len(key)} > {MAX_KEY_LEN} chars encoded)",
            reason="bad_id",
        )
    return key


def decode_key(key: str) -> str:
    """The item id a key was made from. Raises ``PermanentError`` (reason ``bad_key``) for anything
    ``encode_key`` cannot have produced: a dot, an uppercase or short escape, an escaped byte that
    needed no escape, bytes that are not UTF-8, or a key over ``MAX_KEY_LEN``."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LEN or not _KEY_RE.match(key):
        raise PermanentError(f"{key!r} is not a shard key", reason="bad_key")
    raw = bytearray()
    i = 0
    while i < len(key):
        if key[i] == ESCAPE:
            byte = int(key[i + 1:i + 3], 16)
            if chr(byte) in _PLAIN:
                raise PermanentError(f"{key!r} is not a canonical shard key (needless escape)", reason="bad_key")
            raw.append(byte)
            i += 3
        else:
            raw.append(ord(key[i]))
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentError(f"{key!r} does not decode to UTF-8 text", reason="bad_key") from exc


def is_key(name: str) -> bool:
    """Whether ``name`` is a canonical shard key (what ``encode_key`` returns for some id)."""
    try:
        decode_key(name)
    except PermanentError:
        return False
    return True
