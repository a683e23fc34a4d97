"""`run --redo` on the Hub store in the sharded layout (issue #14), against the loopback Hub with the
real client (Xet off): ONE publish commit carries the replaced items' new samples in the step's new
tars and the tars of their old samples rewritten without them (uploaded through LFS before it), the
JSONL and Parquet rows replaced (one per id). A 412 or 409 on that commit re-plans at the head and
still leaves exactly one of each; `verify --deep` is clean and `webdataset` reads exactly N samples."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from emulators.hub import HubEmulator, ManualClock, index_rows
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES
from sharp_dataset_pipeline.publish.parquet_index import read_index
from sharp_dataset_pipeline.records import Batch
from stores.shard_items import members, planar_items, tar_keys
from stores.test_hub_shard_remove import REPO, _store, check_removed
from stores.test_redo_shards_local import ALL, NEW_AT, STEP1, STEP2, remade


def assert_one_of_each(files: dict[str, bytes], ids: list[str], new: dict[str, str], tmp: Path) -> None:
    """Every id once in JSONL, Parquet and the tars (``check_removed`` reads them all, and webdataset
    reads exactly ``ids``); ``new`` (id -> model) rows are the new ones in both indexes."""
    rows = index_rows(files)
    assert Counter(r["id"] for r in rows) == Counter({i: 1 for i in ids})
    by_id = check_removed(files, [], ids, tmp)
    parquet = {e.row.id: e.row for p in files if p.startswith("data/index/") and p.endswith(".parquet")
               for e in read_index(io.BytesIO(files[p]))}
    for item_id, model in new.items():
        assert (by_id[item_id]["processed_at"], by_id[item_id]["model_version"]) == (NEW_AT, model)
        assert (parquet[item_id].processed_at, parquet[item_id].model_version) == (NEW_AT, model)
    for kind in ("data/shards/", "data/ply/"):
        keys = Counter(k for p in files if p.startswith(kind) and p.endswith(".tar") for k in tar_keys(files[p]))
        assert keys == Counter({i: 1 for i in ids}), kind  # the old samples are gone


@pytest.mark.parametrize(("fault", "compacted"), [(None, False), (412, False), (409, False), (412, True)])
def test_redo_all_replaces_inside_the_shards_in_one_commit(tmp_path: Path, fault: int | None,
                                                          compacted: bool) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        for n, ids in enumerate((STEP1, STEP2)):
            assert sorted(store.publish(Batch("c1", items=planar_items(tmp_path / f"w{n}", ids))).published_ids) == ids
        if compacted:
            assert store.compact() == 5
        before = {r["id"]: r for r in index_rows(hub.files(REPO))}
        commits = len(hub.history(REPO))
        if fault:
            hub.faults.script = [fault]
        seen = hub.stats[f"status_{fault}"]
        receipt = store.publish(Batch("c1", items=remade(tmp_path / "r1", ["a2", "b1"]), redo="all"))
        assert sorted(receipt.replaced_ids) == ["a2", "b1"] and sorted(receipt.published_ids) == ["a2", "b1"]
        if fault:
            assert hub.stats[f"status_{fault}"] == seen + 1  # refused once, re-planned at the head, landed
        history = hub.history(REPO)
        assert len(history) == commits + 1  # one commit
        old_tars = {before["a2"]["shard_path"], before["a2"]["ply_shard_path"], before["b1"]["shard_path"]}
        assert old_tars <= set(history[-1].added) and old_tars <= set(history[-1].lfs_added)  # rewritten, via LFS
        files = hub.files(REPO)
        assert_one_of_each(files, ALL, {"a2": "planar-1", "b1": "planar-1"}, tmp_path)
        after = {r["id"]: r for r in index_rows(files)}
        assert after["a2"]["shard_path"] not in old_tars and after["a1"]["shard_path"] == before["a1"]["shard_path"]
        assert members(after["a3"]) != members(before["a3"])  # a3 sat after a2: its members moved
        report = store.admin().verify(clock(), deep=True)
        assert report.problems == [] and report.rows == 5

        # every item, by another model: the old tars emptied and deleted
        receipt = store.publish(Batch("c1", items=remade(tmp_path / "r2", ALL, model="planar-2"),
                                      redo="model-changed"))
        assert sorted(receipt.replaced_ids) == ALL
        files = hub.files(REPO)
        assert_one_of_each(files, ALL, {i: "planar-2" for i in ALL}, tmp_path)
        assert not old_tars & set(files)
        report = store.admin().verify(clock(), deep=True)
        assert report.problems == [] and report.rows == 5
        store.close()
