"""Repo paths: per-item files, shard names, coordination paths."""

from __future__ import annotations

import re

import pytest

from sharp_dataset_pipeline.errors import PermanentError, StoreError
from sharp_dataset_pipeline.publish import layout


@pytest.mark.parametrize(
    ("subdir", "item_id", "ext", "fanout", "expected"),
    [
        ("unsplash", "abc123", "jpg", False, "unsplash/abc123/abc123.jpg"),
        ("unsplash", "abc123", "ply", True, "unsplash/ab/abc123/abc123.ply"),
        ("unsplash/", "Xy_-9", "small.ply", True, "unsplash/Xy/Xy_-9/Xy_-9.small.ply"),
        ("", "abc", "jpg", False, "abc/abc.jpg"),
        ("a/b", "k1", "spz", False, "a/b/k1/k1.spz"),
    ],
)
def test_item_path(subdir: str, item_id: str, ext: str, fanout: bool, expected: str) -> None:
    assert layout.item_path(subdir, item_id, ext, fanout=fanout) == expected


@pytest.mark.parametrize("bad_id", ["", ".hidden", "a/b", "..", "a b", "x" * 129, "é"])
def test_item_path_rejects_unsafe_ids(bad_id: str) -> None:
    with pytest.raises(PermanentError):
        layout.item_path("unsplash", bad_id, "jpg", fanout=False)


@pytest.mark.parametrize("bad_ext", ["", ".jpg", "j/pg", "jpg.", "a..b"])
def test_item_path_rejects_unsafe_ext(bad_ext: str) -> None:
    with pytest.raises(PermanentError):
        layout.item_path("unsplash", "abc", bad_ext, fanout=False)


def test_fanout_bounds_folder_entries() -> None:
    ids = [f"{a}{b}{n:04d}" for a in "ab" for b in "xyz" for n in range(50)]
    top: set[str] = set()
    per_prefix: dict[str, set[str]] = {}
    for item_id in ids:
        parts = layout.item_path("s", item_id, "jpg", fanout=True).split("/")
        top.add(parts[1])
        per_prefix.setdefault(parts[1], set()).add(parts[2])
    assert top == {"ax", "ay", "az", "bx", "by", "bz"}
    assert all(len(v) == 50 for v in per_prefix.values())


@pytest.mark.parametrize("bad", ["/abs", "a/../b", "a//b", "./a", ".git/x", "a\\b", "", "a/"])
def test_check_repo_path_rejects(bad: str) -> None:
    with pytest.raises(StoreError):
        layout.check_repo_path(bad)


def test_check_repo_path_allows_coord() -> None:
    assert layout.check_repo_path(".coord/leases/x.json") == ".coord/leases/x.json"


def test_shard_path_shape_and_uniqueness() -> None:
    ts = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    p1 = layout.shard_path("data/train.jsonl", "host-1/user a", ts, "ab12")
    p2 = layout.shard_path("data/train.jsonl", "host-1/user a", ts, "cd34")
    assert p1 == "data/train-shard-20260101T000000-host_1_user_a-ab12.jsonl"
    assert p1 != p2
    assert layout.is_shard_name("data/train.jsonl", p1.split("/")[-1])
    assert not layout.is_shard_name("data/train.jsonl", "train.jsonl")
    assert not layout.is_shard_name("data/train.jsonl", "." + p1.split("/")[-1] + ".tmp-1-ab")
    assert layout.shard_path("idx.jsonl", "c", ts, "n1").startswith("idx-shard-")


def test_shard_path_matches_index_glob() -> None:
    glob = layout.index_glob("data/train.jsonl")
    assert glob == "data/train*.jsonl"
    name = layout.shard_path("data/train.jsonl", "c", 0.0, "a1")
    pattern = re.escape(glob).replace(r"\*", "[^/]*")
    assert re.fullmatch(pattern, name)
    assert re.fullmatch(pattern, "data/train.jsonl")


@pytest.mark.parametrize("bad", ["data/train.parquet", "data/.jsonl", "/data/train.jsonl"])
def test_index_path_must_be_jsonl(bad: str) -> None:
    with pytest.raises(StoreError):
        layout.shard_path(bad, "c", 0.0, "n")


def test_shard_nonce_must_be_alphanumeric() -> None:
    with pytest.raises(StoreError):
        layout.shard_path("data/train.jsonl", "c", 0.0, "a-b")


@pytest.mark.parametrize(
    "key",
    ["list/oldest/000300-000599", "search/red car/latest/p011-p020", "folder/ab12/00000-00299",
     "über/ключ", ".dot", "a_b", "_2F", "x" * 300],
)
def test_key_encoding_is_safe(key: str) -> None:
    name = layout.encode_key(key)
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", name)
    assert not name.startswith(".")
    assert len(name) <= 160
    if "~" not in name:
        assert layout.decode_key(name) == key


def test_key_encoding_is_injective_on_tricky_pairs() -> None:
    pairs = [("a/b", "a_2Fb"), ("a_b", "a_5Fb"), ("a b", "a_20b"), ("x" * 300, "x" * 301)]
    for a, b in pairs:
        assert layout.encode_key(a) != layout.encode_key(b)


def test_coord_paths() -> None:
    lease = layout.lease_path("list/oldest/000300-000599")
    done = layout.unit_done_path("list/oldest/000300-000599")
    assert re.fullmatch(r"\.coord/leases/[0-9a-f]{2}/list_2Foldest_2F000300-000599\.json", lease)
    assert done.startswith(".coord/done/") and done.endswith("list_2Foldest_2F000300-000599.json")
    assert lease.split("/")[2] == done.split("/")[2]
    assert layout.ledger_path() == ".coord/ledger.sqlite3"


def test_versioned_path_tags_the_name_after_the_id_and_keeps_the_extension() -> None:
    sha = "0123456789abcdef" * 4
    tagged = layout.versioned_path("gaussians/a.b/a.b.small.ply", "a.b", sha)
    assert tagged == "gaussians/a.b/a.b.0123456789ab.small.ply"
    assert layout.versioned_path("photos/x1/x1.jpg", "x1", sha) == "photos/x1/x1.0123456789ab.jpg"
    # The tagged name still belongs to the item's folder (the fan-out rule counts it there).
    assert layout.holder_of(layout.versioned_path("photos/x1/x1.jpg", "x1", sha), "x1") == "photos"
