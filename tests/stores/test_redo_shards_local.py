"""`run --redo` on the local store in the sharded layout (issue #14): the replaced items' new samples
land in the step's new tars and, in the same step, their old samples leave the tars that held them
(a takedown's rewrite, without the exclusion). Checked from the files: one JSONL row and one Parquet
entry per id (the new ones), each sample key once in the tars, `verify --deep` clean, `webdataset`
reading exactly N samples; and a kill -9 during the step leaves the old dataset or the new one."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds

from sharp_dataset_pipeline.publish.parquet_index import row_members
from sharp_dataset_pipeline.records import Batch, ProcessedItem
from sharp_dataset_pipeline.stores.local import LocalStore
from stores.shard_items import planar_items, tar_keys
from stores.test_shard_remove import jsonl_rows, parquet_entries, tar_digests

STEP1 = ["a1", "a2", "a3"]
STEP2 = ["b1", "b2"]
ALL = [*STEP1, *STEP2]
NEW_AT = "2030-01-02T03:04:05Z"


def _publish(tmp: Path) -> tuple[LocalStore, Path]:
    root = tmp / "s"
    store = LocalStore(root, new_layout="shards")
    store.open()
    for n, ids in enumerate((STEP1, STEP2)):
        assert sorted(store.publish(Batch(client_id="c", items=planar_items(tmp / f"w{n}", ids))).published_ids) == ids
    return store, root


def remade(tmp: Path, ids: list[str], model: str = "planar-1") -> list[ProcessedItem]:
    """The same photos processed again, stamped with a new ``processed_at`` (and ``model``)."""
    return [dataclasses.replace(pi, row=dataclasses.replace(pi.row, processed_at=NEW_AT, model_version=model))
            for pi in planar_items(tmp, ids)]


def assert_one_of_each(root: Path, ids: list[str], new: dict[str, str]) -> None:
    """Every id once in JSONL, Parquet and the tars; ``new`` (id -> model) rows are the new ones."""
    rows, entries = jsonl_rows(root), parquet_entries(root)  # both assert one row per id
    assert sorted(rows) == sorted(ids) and sorted(entries) == sorted(ids)
    for item_id, model in new.items():
        assert (rows[item_id].processed_at, rows[item_id].model_version) == (NEW_AT, model)
        assert (entries[item_id].row.processed_at, entries[item_id].row.model_version) == (NEW_AT, model)
    for kind in ("shards", "ply"):
        keys = Counter(k for t in (root / "data" / kind).rglob("*.tar") for k in tar_keys(t.read_bytes()))
        assert keys == Counter({i: 1 for i in ids}), kind  # the old samples are gone
    for item_id in ids:
        row = rows[item_id]
        assert entries[item_id].members == tuple(sorted(row_members(row), key=lambda m: (m.field, m.shard)))
        for m in row_members(row):
            assert tar_digests(root / m.shard)[m.name] == m.sha256
    samples = list(wds.WebDataset(sorted(str(t) for t in (root / "data" / "shards").rglob("*.tar")),
                                  shardshuffle=False))
    assert len(samples) == len(ids)
    report = LocalStore(root).admin().verify(time.time(), deep=True)
    assert report.problems == [] and report.rows == len(ids)


@pytest.mark.parametrize("compacted", [False, True])
def test_redo_all_replaces_the_items_inside_their_shards(tmp_path: Path, compacted: bool) -> None:
    store, root = _publish(tmp_path)
    if compacted:
        assert store.compact() == 5
    before = jsonl_rows(root)
    old_tars = {before[i].shard_path for i in ALL}
    # a2 and b1: part of each step; their tars keep the other samples, with moved members
    receipt = store.publish(Batch(client_id="c", items=remade(tmp_path / "r1", ["a2", "b1"]), redo="all"))
    assert sorted(receipt.published_ids) == ["a2", "b1"] and sorted(receipt.replaced_ids) == ["a2", "b1"]
    assert_one_of_each(root, ALL, {"a2": "planar-1", "b1": "planar-1"})
    after = jsonl_rows(root)
    assert after["a2"].shard_path not in old_tars and after["a1"].shard_path == before["a1"].shard_path
    assert after["a3"].members != before["a3"].members  # a3 sat after a2 in the rewritten tar
    assert list((root / ".coord" / "staging").iterdir()) == []  # nothing staged is left, no empty pack folder

    # then every item at once: the old tars emptied and deleted
    receipt = store.publish(Batch(client_id="c", items=remade(tmp_path / "r2", ALL), redo="all"))
    assert sorted(receipt.replaced_ids) == ALL
    assert_one_of_each(root, ALL, {i: "planar-1" for i in ALL})
    assert not any((root / t).exists() for t in old_tars)
    store.close()


def test_redo_model_changed_replaces_only_the_other_models_items(tmp_path: Path) -> None:
    store, root = _publish(tmp_path)
    items = remade(tmp_path / "r1", ALL, model="planar-2")
    receipt = store.publish(Batch(client_id="c", items=items, redo="model-changed"))
    assert sorted(receipt.replaced_ids) == ALL
    assert_one_of_each(root, ALL, {i: "planar-2" for i in ALL})
    again = store.publish(Batch(client_id="c", items=remade(tmp_path / "r2", ALL, model="planar-2"),
                                redo="model-changed"))
    assert again.published_ids == [] and again.replaced_ids == []  # done for this model now
    assert_one_of_each(root, ALL, {i: "planar-2" for i in ALL})
    store.close()


KILL_DURING_REDO = r'''
import dataclasses, os, signal, sys
from pathlib import Path
sys.path[:0] = [sys.argv[3]]
from sharp_dataset_pipeline.stores import local, local_shard_remove
from sharp_dataset_pipeline.stores.local import LocalStore
from sharp_dataset_pipeline.records import Batch
from stores.test_redo_shards_local import remade

root, point, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[4])
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if point == "staged":  # new tars packed, old ones rewritten and staged; the transaction not committed
    local.record_takedown = die
else:  # committed; the first staged file renamed into place, the rest not yet
    carry = local_shard_remove._carry_out
    def half(root, entries):
        carry(root, entries[:1])
        die()
    local_shard_remove._carry_out = half
store = LocalStore(root)
store.open()
store.publish(Batch(client_id="c", items=remade(work, ["a2", "b1", "b2"]), redo="all"))
'''


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("point", ["staged", "carrying_out"])
def test_kill9_during_a_redo_step_leaves_the_old_or_the_new_dataset(tmp_path: Path, point: str) -> None:
    store, root = _publish(tmp_path)
    store.close()
    before = jsonl_rows(root)
    digests = {t.relative_to(root).as_posix(): tar_digests(t) for t in (root / "data").rglob("*.tar")}
    script = tmp_path / "kill.py"
    script.write_text(KILL_DURING_REDO)
    tests = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script), str(root), point, tests, str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [p for p in (root / ".coord" / "staging").rglob("*") if p.is_file()]  # the kill left staged files
    reopened = LocalStore(root)
    reopened.open()  # crash repair
    assert not [p for p in (root / ".coord" / "staging").rglob("*") if p.is_file()]
    if point == "staged":  # untouched: every row, member and Parquet entry as before
        assert jsonl_rows(root) == before and sorted(parquet_entries(root)) == sorted(ALL)
        assert {t.relative_to(root).as_posix(): tar_digests(t) for t in (root / "data").rglob("*.tar")} == digests
        assert_one_of_each(root, ALL, {})
    else:  # the new rows, the old samples taken out (rolled forward)
        assert_one_of_each(root, ALL, {i: "planar-1" for i in ["a2", "b1", "b2"]})
    reopened.close()
