"""`remove` of items inside shards on the Hub store (issue #14), against the loopback Hub with the real
client (Xet off): ONE commit carries the tars rewritten without the removed samples (uploaded through
LFS before it), the JSONL rows without the item and with the kept rows' new members, the rewritten
Parquet index and the exclusion; a 412 or 409 on that commit is retried at the head and the item is
removed exactly once; `verify --deep` is clean and `webdataset` reads exactly the kept samples."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from emulators.hub import HubEmulator, ManualClock, index_rows
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES
from sharp_dataset_pipeline.publish.parquet_index import read_index
from sharp_dataset_pipeline.records import Batch
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore
from stores.shard_items import members, planar_items

REPO = "tester/takedown"
TOKEN = "hf_takedowntoken0000000"
STEP1 = ["a1", "a2", "a3"]
STEP2 = ["b1", "b2"]


def _store(hub: HubEmulator, clock: ManualClock, tmp: Path, client: str = "c1") -> HubStore:
    store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id=client, cache_dir=tmp / f"c-{client}",
                                state_max_age_s=0.0, retry_base_s=0.5), clock=clock, sleep=clock.sleep)
    store.open()
    return store


def _digests(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: hashlib.sha256(tf.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                for m in tf.getmembers() if m.isfile()}


def check_removed(files: dict[str, bytes], gone: list[str], kept: list[str], tmp: Path) -> dict[str, dict]:
    """The positive outcome, read from the repo's files: returns the JSONL rows by id."""
    rows = {r["id"]: r for r in index_rows(files)}
    assert sorted(rows) == sorted(kept)
    parquet = {}
    for path in (p for p in files if p.startswith("data/index/") and p.endswith(".parquet")):
        for e in read_index(io.BytesIO(files[path])):
            assert e.row.id not in parquet
            parquet[e.row.id] = e
    assert sorted(parquet) == sorted(kept)
    tars = sorted(p for p in files if p.endswith(".tar"))
    assert not [n for t in tars for n in _digests(files[t]) if n.split(".", 1)[0] in gone]
    for item_id, row in rows.items():
        assert json.loads(parquet[item_id].row.members) == members(row)  # both indexes say the same
        for m in members(row):
            assert _digests(files[m["shard"]])[m["name"]] == m["sha256"]
            tar = files[m["shard"]]
            assert hashlib.sha256(tar[m["offset"]:m["offset"] + m["size"]]).hexdigest() == m["sha256"]
    local = []
    for n, t in enumerate(t for t in tars if t.startswith("data/shards/")):
        local.append(tmp / f"read-{n}.tar")
        local[-1].write_bytes(files[t])
    samples = list(wds.WebDataset([str(p) for p in local], shardshuffle=False))
    assert sorted(json.loads(s["json"])["id"] for s in samples) == sorted(kept)
    return rows


@pytest.mark.parametrize(("fault", "compacted"), [(412, False), (409, False), (412, True), ("moved", False)])
def test_remove_inside_a_shard_is_one_commit_and_survives_a_refused_commit(tmp_path: Path, fault: int | str,
                                                                          compacted: bool) -> None:
    """``moved``: another client's publish lands after the head the remove planned at (a lagging head
    read), so the 412 is real and the remove is planned again at the new head, which it keeps whole."""
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        for n, ids in enumerate((STEP1, STEP2)):
            assert sorted(store.publish(Batch("c1", items=planar_items(tmp_path / f"w{n}", ids))).published_ids) == ids
        if compacted:
            assert store.compact() == 5
        before = {r["id"]: r for r in index_rows(hub.files(REPO))}
        shard, ply_shard = before["a2"]["shard_path"], before["a2"]["ply_shard_path"]
        admin = store.admin()
        commits = len(hub.history(REPO))
        preview = admin.preview_remove(["a2"], clock())
        assert preview.dry_run and sorted(preview.shards_rewritten) == sorted([shard, ply_shard])
        assert "rewrite shard " + shard in preview.text()
        assert any(p.endswith(".parquet") for p in preview.index_files_rewritten)
        assert len(hub.history(REPO)) == commits  # a preview commits nothing

        late: list[str] = []
        if fault == "moved":
            other = _store(hub, clock, tmp_path, "c9")
            hub.faults.lag_reads = 1  # the next head read, the remove's, still names the head before c9's step
            late = sorted(other.publish(Batch("c9", items=planar_items(tmp_path / "w8", ["m1", "m2"]))).published_ids)
            assert late == ["m1", "m2"]
            other.close()
            commits += 1
        else:
            hub.faults.script = [fault]
        refused = f"status_{412 if fault == 'moved' else fault}"
        seen = hub.stats[refused]
        result = admin.remove(["a2"], "takedown request", clock())
        assert result.removed == ["a2"] and sorted(result.shards_rewritten) == sorted([shard, ply_shard])
        assert hub.stats[refused] == seen + 1  # the remove's first attempt was refused, the second landed
        if fault == "moved":
            assert hub.stats["lagged_head_reads"] >= 1
        history = hub.history(REPO)
        assert len(history) == commits + 1  # removed exactly once, in one commit
        last = history[-1]
        assert {shard, ply_shard} <= set(last.added) and {shard, ply_shard} <= set(last.lfs_added)
        files = hub.files(REPO)
        removals = [p for p in files if "zz-removal-" in p]
        assert len(removals) == 1 and "a2" in files[removals[0]].decode()
        rows = check_removed(files, ["a2"], ["a1", "a3", *STEP2, *late], tmp_path)
        assert rows["b1"] == before["b1"]  # another step's rows are untouched
        assert members(rows["a3"]) != members(before["a3"])  # a3 sat after a2: its members moved

        report = admin.verify(clock(), deep=True)
        assert report.problems == [] and report.rows == 4 + len(late)
        store.close()

        # a rerun over the same photos, by another client, never publishes a2 again
        other = _store(hub, clock, tmp_path, "c2")
        again = other.publish(Batch("c2", items=planar_items(tmp_path / "w9", STEP1)))
        assert "a2" not in again.published_ids and other.item_states(["a2"])["a2"].excluded
        check_removed(hub.files(REPO), ["a2"], ["a1", "a3", *STEP2, *late], tmp_path)
        other.close()


def test_removing_a_whole_step_deletes_its_tars_and_index_shard(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        for n, ids in enumerate((STEP1, STEP2)):
            store.publish(Batch("c1", items=planar_items(tmp_path / f"w{n}", ids)))
        before = {r["id"]: r for r in index_rows(hub.files(REPO))}
        gone = {before["b1"]["shard_path"], before["b1"]["ply_shard_path"]}
        result = store.admin().remove(STEP2, "", clock())
        assert sorted(result.removed) == STEP2 and result.shards_rewritten == []
        files = hub.files(REPO)
        assert gone <= set(result.files_deleted) and not gone & set(files)
        pending = [p for p in files if p.startswith("data/index/pending/")]
        assert len(pending) == 1  # STEP2's index shard went with its tars
        assert pq.read_table(io.BytesIO(files[pending[0]]), columns=["id"]).column("id").to_pylist() == STEP1
        check_removed(files, STEP2, STEP1, tmp_path)
        assert store.admin().verify(clock(), deep=True).problems == []
        store.close()
