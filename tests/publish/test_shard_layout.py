"""Sharded layout: deterministic paths, batches split into ~1 GB shards, bounded folders."""

from __future__ import annotations

import io
import random

import pytest

from sharp_dataset_pipeline.errors import PermanentError
from sharp_dataset_pipeline.publish import shard_layout as sl
from sharp_dataset_pipeline.publish import tar_shard
from sharp_dataset_pipeline.publish.shard_keys import encode_key
from sharp_dataset_pipeline.publish.shard_layout import PlannedItem


def _items(n: int, size: int = 1000, prefix: str = "id") -> list[PlannedItem]:
    return [PlannedItem(f"{prefix}{i}", {"jpg": size, "spz": size * 3, "json": 200, "webp": 100}) for i in range(n)]


def test_batch_digest_is_deterministic_per_client_and_item_set() -> None:
    a = sl.batch_digest("client-a", ["x", "y", "z"])
    assert a == sl.batch_digest("client-a", ["z", "y", "x", "x"])  # order and repeats do not matter
    assert a != sl.batch_digest("client-b", ["x", "y", "z"])
    assert a != sl.batch_digest("client-a", ["x", "y"])
    assert a != sl.batch_digest("client-a", ["x", "y", "z"], salt="model-2")
    # Length-prefixed parts: an id holding a separator cannot pass for two ids.
    assert sl.batch_digest("c", ["a\x00b"]) != sl.batch_digest("c", ["a", "b"])
    assert sl.batch_digest("c", ["ab"]) != sl.batch_digest("ca", ["b"])
    assert len(a) == sl.BATCH_DIGITS and int(a, 16) >= 0
    with pytest.raises(PermanentError):
        sl.batch_digest("c", [])


def test_paths_and_parse() -> None:
    batch = sl.batch_digest("c", ["a"])
    path = sl.shard_path(batch, 3)
    assert path == f"data/shards/{batch[:2]}/{batch}-003.tar"
    assert sl.parse_shard_path(path) == ("splats", batch, 3)
    ply = sl.shard_path(batch, 0, kind="ply")
    assert ply == f"data/ply/{batch[:2]}/{batch}-000.tar"
    assert sl.parse_shard_path(ply) == ("ply", batch, 0)
    assert sl.index_shard_path(batch) == f"data/index/pending/{batch[:2]}/{batch}.parquet"
    assert sl.index_part_path(batch) == f"data/index/parts/part-{batch}.parquet"
    other = "ff" if batch[:2] != "ff" else "00"
    for bad in (f"data/shards/{other}/{batch}-000.tar", f"data/shards/{batch[:2]}/{batch}-0.tar",
                "data/index/x.parquet", f"data/shards/{batch[:2]}/{batch}-000.tar.tmp"):
        assert sl.parse_shard_path(bad) is None
    for call in (lambda: sl.shard_path("XYZ", 0), lambda: sl.shard_path(batch, 1000),
                 lambda: sl.shard_path(batch, 0, kind="files"), lambda: sl.index_shard_path("../x")):
        with pytest.raises(PermanentError):
            call()


def test_plan_splits_at_the_limit_and_matches_the_real_tars() -> None:
    items = _items(10, size=10_000)
    one = tar_shard.finish_tar_bytes(tar_shard.item_tar_bytes("id0", items[0].field_sizes))
    limit = 3 * one  # three items' worth fits once the end blocks are shared
    batch = sl.batch_digest("c", [i.item_id for i in items])
    plans = sl.plan_shards(items, batch, max_shard_bytes=limit)
    assert [len(p.item_ids) for p in plans] == [3, 3, 3, 1]
    assert [p.path for p in plans] == [sl.shard_path(batch, n) for n in range(4)]
    assert all(p.size <= limit for p in plans)
    assert [i for p in plans for i in p.item_ids] == sorted((i.item_id for i in items), key=encode_key)
    # The planned size is the size of the tar tar_shard writes for those items.
    by_id = {i.item_id: i for i in items}
    for plan in plans:
        members = [tar_shard.ShardItem(encode_key(i), {f: b"x" * s for f, s in by_id[i].field_sizes.items()})
                   for i in plan.item_ids]
        assert tar_shard.write_shard(members, io.BytesIO()).size == plan.size
    # Same items in another order: the same plan.
    assert sl.plan_shards(list(reversed(items)), batch, max_shard_bytes=limit) == plans


def test_an_oversized_item_gets_a_shard_alone() -> None:
    items = [PlannedItem("big", {"spz": 5000}), PlannedItem("a", {"spz": 10}), PlannedItem("c", {"spz": 10})]
    plans = sl.plan_shards(items, "0" * sl.BATCH_DIGITS, max_shard_bytes=4096)
    assert [p.item_ids for p in plans] == [("a",), ("big",), ("c",)]


def test_plan_batch_has_ply_shards_of_their_own() -> None:
    items = _items(5)
    ply = [PlannedItem(i.item_id, {"ply": 66_000, "json": 200}) for i in items]
    plan = sl.plan_batch("client", items, ply_items=ply, max_shard_bytes=200_000)
    assert plan.batch == sl.batch_digest("client", [i.item_id for i in items])
    assert [p.path.split("/")[1] for p in plan.shards] == ["shards"]
    assert [len(p.item_ids) for p in plan.ply_shards] == [2, 2, 1]
    assert all(p.path.startswith("data/ply/") for p in plan.ply_shards)
    assert plan.paths()[-1] == sl.index_shard_path(plan.batch)
    with pytest.raises(PermanentError, match="same items"):
        sl.plan_batch("client", items, ply_items=ply[:2])
    with pytest.raises(PermanentError, match="twice"):
        sl.plan_shards(_items(2) + _items(1), plan.batch)


def test_folder_entries_counts_files_and_folders() -> None:
    counts = sl.folder_entries(["a/b/c.tar", "a/b/d.tar", "a/e.tar", "f.txt"])
    assert counts == {"": 2, "a": 2, "a/b": 2}


def test_fanout_keeps_folders_under_1000_entries_at_the_hub_file_limit() -> None:
    """100,000 shard files (the Hub's files-per-repository guidance): no folder over 1,000 entries."""
    rng = random.Random(3)
    paths = [sl.shard_path(sl.batch_digest(f"client{rng.randrange(64)}", [str(n)]), 0) for n in range(100_000)]
    counts = sl.folder_entries(paths)
    assert counts["data/shards"] == 256
    assert max(counts.values()) <= sl.MAX_FOLDER_ENTRIES
    assert max(v for k, v in counts.items() if k.count("/") == 2) > 300  # the leaf folders are really used
