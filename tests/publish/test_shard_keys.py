"""Shard keys: reversible, dot-free, and read back as one sample by the real WebDataset splitters."""

from __future__ import annotations

import os
import random

import pytest
from webdataset.tariterators import base_plus_ext

from sharp_dataset_pipeline.errors import PermanentError
from sharp_dataset_pipeline.publish.shard_keys import MAX_KEY_LEN, decode_key, encode_key, is_key

HOSTILE_IDS = [
    "-2vD8lIhdnw",  # real Unsplash ids start with '-' and hold '_'
    "a_b-c",
    "__key__",
    "__",
    "_",
    "_2e",  # looks like an escape already
    "a.b.c",
    ".hidden",
    "..",
    "a/b/../c",
    "C:\\x\\y",
    "é",
    "日本語",
    "emoji🙂",
    "tab\tnew\nline",
    "nul\x00byte",
    " spaced ",
    "%2e%2f",
    "sha256:" + "ab" * 32,
    "x" * 128,
    "MixedCase",
]


@pytest.mark.parametrize("item_id", HOSTILE_IDS)
def test_round_trip_and_key_is_safe(item_id: str) -> None:
    key = encode_key(item_id)
    assert decode_key(key) == item_id
    assert is_key(key)
    assert "." not in key and "/" not in key and "__" not in key
    assert not key.startswith(".")
    # What both readers see: the whole key before the first dot, the field after it.
    assert base_plus_ext(f"{key}.spz") == (key, "spz")
    assert base_plus_ext(f"{key}.photo.jpg") == (key, "photo.jpg")
    # datasets' tar iterator skips basenames starting with '.' or '__' (hidden / metadata).
    assert not os.path.basename(f"{key}.json").startswith((".", "__"))


@pytest.mark.parametrize(
    ("item_id", "key"),
    [
        ("abc123", "abc123"),
        ("-2vD8lIhdnw", "-2vD8lIhdnw"),
        ("a_b", "a_5fb"),
        ("a.b", "a_2eb"),
        ("a/b", "a_2fb"),
        ("é", "_c3_a9"),
        ("__key__", "_5f_5fkey_5f_5f"),
    ],
)
def test_known_encodings(item_id: str, key: str) -> None:
    assert encode_key(item_id) == key


def test_random_ids_round_trip_and_stay_distinct() -> None:
    rng = random.Random(7)
    alphabet = "aZ09-_./\\ é日🙂\x00%"
    ids = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20))) for _ in range(3000)}
    keys = {encode_key(i) for i in ids}
    assert len(keys) == len(ids)  # one-to-one
    assert {decode_key(k) for k in keys} == ids


@pytest.mark.parametrize("bad_id", ["", "x" * (MAX_KEY_LEN + 1), "é" * 40, "\ud800"])
def test_encode_rejects(bad_id: str) -> None:
    with pytest.raises(PermanentError) as err:
        encode_key(bad_id)
    assert err.value.reason == "bad_id"


@pytest.mark.parametrize(
    "bad_key",
    [
        "", "a.b", "a/b", "a_", "a_2", "a_2E",  # dot, slash, short or uppercase escape
        "a_61",  # 'a' escaped: not canonical, would give two keys for one id
        "_2d",  # '-' escaped: same
        "_ff",  # not UTF-8
        "_ed_a0_80",  # a UTF-8-encoded surrogate
        "_c3",  # truncated multibyte sequence
        "x" * (MAX_KEY_LEN + 1),
        "a b",
    ],
)
def test_decode_rejects_non_canonical(bad_key: str) -> None:
    with pytest.raises(PermanentError) as err:
        decode_key(bad_key)
    assert err.value.reason == "bad_key"
    assert not is_key(bad_key)
