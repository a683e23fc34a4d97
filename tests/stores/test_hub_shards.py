"""The Hub store in the sharded layout, against the loopback Hub with the real client (Xet off):
a new repo is marked ``shards``; each publish step is one commit with its WebDataset tars (uploaded
through LFS before the commit), its Parquet index shard and its JSONL rows pointing at tar members;
faults and a second client never publish an item twice or leave a row pointing at a missing member;
compaction merges the pending Parquet files into parts in the same commit."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi

from emulators.hub import HubEmulator, HubFaults, ManualClock, index_rows
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES
from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.publish.shard_keys import encode_key
from sharp_dataset_pipeline.records import Batch
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore
from stores.shard_items import members, planar_items, tar_keys

REPO = "tester/shards"
TOKEN = "hf_shardtesttoken00000"


def _store(hub: HubEmulator, clock: ManualClock, tmp: Path, client: str = "c1", **kw) -> HubStore:
    store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id=client, cache_dir=tmp / f"c-{client}",
                                state_max_age_s=0.0, retry_base_s=0.5, **kw), clock=clock, sleep=clock.sleep)
    store.open()
    return store


def check_repo(files: dict[str, bytes], expect_ids: set[str]) -> list[dict]:
    """Every expected item exactly once: one JSONL row, one sample in the splat tars (and in the PLY
    tars), every member's bytes where its row says; no tar that no row names; the Parquet index holds
    every item once. Returns the rows."""
    rows = index_rows(files)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(expect_ids) and len(ids) == len(set(ids))
    named = set()
    for row in rows:
        assert row["image_path"] == "" and row["ply_path"] == "" and row["shard_key"] == encode_key(row["id"])
        for m in members(row):
            tar = files[m["shard"]]  # a row never points at a missing shard
            assert hashlib.sha256(tar[m["offset"]:m["offset"] + m["size"]]).hexdigest() == m["sha256"]
            named.add(m["shard"])
        assert {m["field"] for m in members(row)} >= {"jpg", "spz", "json", "webp"}
    tars = {p for p in files if p.endswith(".tar")}
    assert tars == named, f"tars no row names: {sorted(tars - named)}"
    for kind in ("data/shards/", "data/ply/"):
        keys = [k for p in sorted(tars) if p.startswith(kind) for k in tar_keys(files[p])]
        assert sorted(keys) == sorted(encode_key(i) for i in expect_ids)
    parquet = [p for p in files if p.startswith("data/index/") and p.endswith(".parquet")]
    indexed = [i for p in parquet for i in pq.read_table(io.BytesIO(files[p]), columns=["id"]).column("id").to_pylist()]
    assert sorted(indexed) == sorted(expect_ids)
    return rows


def test_a_new_repo_is_sharded_and_each_batch_is_one_commit(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        assert store.layout == "shards"
        assert json.loads(hub.files(REPO)[".coord/layout.json"]) == {"layout": "shards"}
        batches = [[f"p{b}{i}" for i in range(3)] for b in range(3)]
        commits = len(hub.history(REPO))
        for n, ids in enumerate(batches):
            items = planar_items(tmp_path / f"b{n}", ids)
            receipt = store.publish(Batch("c1", items=items, units_done=[]))
            assert sorted(receipt.published_ids) == ids
        history = hub.history(REPO)
        assert len(history) == commits + 3  # one commit per batch
        for commit in history[-3:]:
            tars = [p for p in commit.added if p.endswith(".tar")]
            assert tars and set(tars) <= set(commit.lfs_added)  # the tars came through LFS
            assert any(p.startswith("data/index/pending/") and p in commit.lfs_added for p in commit.added)
        files = hub.files(REPO)
        check_repo(files, {i for ids in batches for i in ids})
        card = files["README.md"].decode()
        assert "config_name: index" in card and "config_name: splats" in card and "config_name: ply" in card
        assert card.index("config_name: index") < card.index("config_name: splats")
        report = store.budget_report()
        assert report["lfs_uploads"] >= 9 and report["commits"] == 4  # the marker + card, then 3 batches
        pending = [p for p in files if p.startswith("data/index/pending/")]
        assert len(pending) == 3

        assert store.compact() == 9
        after = hub.files(REPO)
        assert not [p for p in after if p.startswith("data/index/pending/")]
        parts = [p for p in after if p.startswith("data/index/parts/")]
        assert len(parts) == 1 and len(hub.history(REPO)) == commits + 4  # one commit for both indexes
        assert set(hub.history(REPO)[-1].deleted) >= set(pending)
        check_repo(after, {i for ids in batches for i in ids})
        store.close()

        again = _store(hub, clock, tmp_path, "c2")  # the marker decides, not the settings
        assert again.layout == "shards"
        again.close()
        with pytest.raises(ConfigError, match="shards layout"):
            _store(hub, clock, tmp_path, "c3", layout="files")


def test_a_repo_with_rows_or_the_predecessors_files_and_no_marker_stays_files(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        old = _store(hub, clock, tmp_path, "old", layout="files")
        old.publish(Batch("old", items=planar_items(tmp_path / "a", ["f1"])))
        old.close()
        assert json.loads(hub.files(REPO)[".coord/layout.json"]) == {"layout": "files"}
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.delete_file(".coord/layout.json", REPO, repo_type="dataset")  # as before the marker existed
        files = hub.files(REPO)
        rows = index_rows(files)
        assert rows[0]["image_path"] in files and rows[0]["members"] == ""
        commits = len(hub.history(REPO))
        auto = _store(hub, clock, tmp_path, "auto")
        assert auto.layout == "files" and len(hub.history(REPO)) == commits  # opening made no commit
        auto.close()
        with pytest.raises(ConfigError, match="migrate --to shards"):
            _store(hub, clock, tmp_path, "s", layout="shards")
        # the predecessor's layout: per-item folders under unsplash/, no index yet
        api.create_repo("tester/pred", repo_type="dataset")
        api.upload_file(path_or_fileobj=b"ply\n", path_in_repo="unsplash/abc/abc.ply", repo_id="tester/pred",
                        repo_type="dataset")
        pred = HubStore(HubOptions("tester/pred", endpoint=hub.url, token=TOKEN, client_id="p",
                                   cache_dir=tmp_path / "pred"), clock=clock, sleep=clock.sleep)
        pred.open()
        assert pred.layout == "files" and ".coord/layout.json" not in hub.files("tester/pred")
        pred.close()


@pytest.mark.parametrize("fault", [412, 409, 500, "500-after", "drop-after"])
def test_a_refused_or_unanswered_commit_publishes_each_item_once_and_uploads_once(tmp_path: Path, fault) -> None:
    """The step's item set is packed once and its tars uploaded once; after a 412 (decided again at
    the head), a 409, a 500 that applied nothing, or a commit applied and then answered 500 / not at
    all (found landed at the head), every item is in the repo exactly once."""
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        items = planar_items(tmp_path / "b", ["q1", "q2", "q3"])
        hub.faults.script = [fault]
        commits = len(hub.history(REPO))
        receipt = store.publish(Batch("c1", items=items))
        assert sorted(receipt.published_ids) == ["q1", "q2", "q3"]
        assert len(hub.history(REPO)) == commits + 1
        files = hub.files(REPO)
        check_repo(files, {"q1", "q2", "q3"})
        lfs = [p for p in hub.history(REPO)[-1].lfs_added]
        assert hub.stats["lfs_put_requests"] == len(lfs) == hub.stats["lfs_objects_stored"]
        assert hub.stats["lfs_bytes_received"] == sum(len(files[p]) for p in lfs)
        store.close()


def test_two_clients_with_faults_publish_each_item_once(tmp_path: Path) -> None:
    """Overlapping batches from two clients under random 409s, applied-then-500 commits and a lagging
    head: the second client packs only what is still new, so no item is in two tars."""
    clock = ManualClock()
    faults = HubFaults(seed=7, random_409_rate=0.2, error_after_commit_rate=0.2, lag_reads=1)
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        a, b = _store(hub, clock, tmp_path, "a"), _store(hub, clock, tmp_path, "b")
        hub.set_faults(faults)
        wanted: set[str] = set()
        for n in range(3):
            ids_a = [f"x{n}{i}" for i in range(3)]
            ids_b = [f"x{n}{i}" for i in range(1, 5)]  # two ids shared with a
            wanted |= {*ids_a, *ids_b}
            got_a = a.publish(Batch("a", items=planar_items(tmp_path / f"a{n}", ids_a)))
            got_b = b.publish(Batch("b", items=planar_items(tmp_path / f"b{n}", ids_b)))
            assert set(got_a.published_ids) | set(got_b.published_ids) == {*ids_a, *ids_b}
            assert not set(got_a.published_ids) & set(got_b.published_ids)
        assert hub.stats["commit_500_after_apply"] + hub.stats["status_409"] > 0  # the faults did happen
        check_repo(hub.files(REPO), wanted)
        a.close()
        b.close()


def test_big_tars_go_through_lfs_by_size_and_small_ones_inline(tmp_path: Path) -> None:
    """With only ``*.bin`` tracked (the emulator's default), a PLY tar over 10 MiB takes the LFS path
    because of its size, and the small splat tar and Parquet index shard go inline."""
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        store = _store(hub, clock, tmp_path)
        items = planar_items(tmp_path / "big", ["g1", "g2"], resolution=400)  # about 7 MB of PLY each
        store.publish(Batch("c1", items=items))
        commit = hub.history(REPO)[-1]
        files = hub.files(REPO)
        ply = [p for p in commit.added if p.startswith("data/ply/")]
        assert ply and all(len(files[p]) > 10 * 1024 * 1024 for p in ply) and commit.lfs_added == ply
        assert [p for p in commit.added if p.startswith("data/shards/")]
        check_repo(files, {"g1", "g2"})
        store.close()


CHILD = """
import sys
from pathlib import Path
from sharp_dataset_pipeline.records import Batch
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore
from stores.shard_items import planar_items

url, work, ids, repo, token = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(","), sys.argv[4], sys.argv[5]
items = planar_items(work / "items", ids)
store = HubStore(HubOptions(repo, endpoint=url, token=token, client_id="killed", cache_dir=work / "cache",
                            retry_base_s=0.05))
store.open()
print("opened", flush=True)
store.publish(Batch("killed", items=items))
print("published", flush=True)
"""


def _killed_child(hub: HubEmulator, tmp: Path, ids: list[str], ready, hold) -> None:
    """A client process publishing ``ids``, killed with SIGKILL as soon as ``ready(hub)`` holds
    (``hold`` is set on the emulator once the child has opened the store, to make that moment last)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(Path(__file__).resolve().parents[1])])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, hub.url, str(tmp), ",".join(ids), REPO, TOKEN], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "opened", child.stderr
        hold(hub)
        deadline = time.monotonic() + 120
        while not ready(hub):
            assert child.poll() is None, f"the child ended before its kill: {child.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    hub.faults.delay_s = hub.faults.commit_hold_s = 0.0


@pytest.mark.parametrize("moment", ["tar upload", "commit applied, not answered"])
def test_kill9_of_a_client_never_leaves_an_item_twice_or_a_row_without_its_member(tmp_path: Path, moment) -> None:
    """kill -9 while a tar is on its way to the storage host (nothing committed: its object, if it
    arrived, is in no commit) or while the applied commit's answer is held back; the client run again
    (same id, the items made again) leaves every item exactly once."""
    ids = ["k1", "k2", "k3"]
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        if moment == "tar upload":
            def hold(h: HubEmulator) -> None:
                h.faults.delay_s = 2.0

            def ready(h: HubEmulator) -> bool:
                return h.stats["storage"] >= 1
        else:
            def hold(h: HubEmulator) -> None:
                h.faults.commit_hold_s = 5.0

            commits_before: list[int] = []

            def ready(h: HubEmulator) -> bool:
                commits_before[:] = commits_before or [len(h.history(REPO))]
                return len(h.history(REPO)) > commits_before[0]
        _killed_child(hub, tmp_path / "child", ids, ready, hold)
        killed_head = hub.repo(REPO).head
        landed = [c for c in hub.history(REPO) if any(p.endswith(".tar") for p in c.added)]
        assert len(landed) == (0 if moment == "tar upload" else 1)
        # no tar is in the tree unless a row names it, before and after the restart
        if landed:
            check_repo(hub.files(REPO), set(ids))
        else:
            assert not [p for p in hub.files(REPO) if p.endswith(".tar") or p.startswith("data/index/")]
        clock = ManualClock()
        again = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id="killed",
                                    cache_dir=tmp_path / "again", retry_base_s=0.05), clock=clock, sleep=clock.sleep)
        again.open()
        receipt = again.publish(Batch("killed", items=planar_items(tmp_path / "again-items", ids)))
        assert sorted(receipt.published_ids) == ([] if landed else ids)
        if landed:
            assert hub.repo(REPO).head == killed_head  # nothing left to publish: no commit at all
        check_repo(hub.files(REPO), set(ids))
        again.close()


READ = """
import json, sys
import datasets
repo = sys.argv[1]
index = datasets.load_dataset(repo, split="train")  # the card's default config: the Parquet index
splats = datasets.load_dataset("webdataset", data_files={"train": f"hf://datasets/{repo}/data/shards/**/*.tar"},
                               split="train", streaming=True)
# the card's own form: the config's name, its files (the repo's builder comes from its first config) and
# the features the card declares (datasets would otherwise type each json field from the first samples)
features = datasets.load_dataset_builder(repo, "splats").info.features
named = {streaming: datasets.load_dataset(repo, "splats", data_files={"train": "data/shards/**/*.tar"},
                                          features=features, split="train", streaming=streaming)
         for streaming in (True, False)}
print(json.dumps({
    "named": {str(k): sorted((r["json"]["id"], type(r["jpg"]).__name__, len(r["spz"]), r["json"]["description"],
                              r["json"]["camera"]["image_size"]) for r in ds) for k, ds in named.items()},
    "index": sorted(index["id"]),
    "preview": [type(r["preview"]).__name__ + ":" + "x".join(map(str, r["preview"].size)) for r in index],
    "splats": sorted((r["json"]["id"], type(r["jpg"]).__name__, type(r["webp"]).__name__, len(r["spz"]))
                     for r in splats),
}))
"""


def test_datasets_and_webdataset_read_what_was_published(tmp_path: Path) -> None:
    """Through the loopback Hub (``HF_ENDPOINT``): ``load_dataset(repo)`` opens the Parquet index with
    previews decoded as images, the ``webdataset`` builder on the tars' ``hf://`` paths and
    ``webdataset.WebDataset`` on their download URLs give one sample per item, and the ``splats`` config
    with the card's features reads, streaming or not, a json field that is null in the first samples."""
    import os
    import subprocess
    import sys

    import webdataset as wds

    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        ids = {"r1", "r2", "r3"}
        store.publish(Batch("c1", items=planar_items(tmp_path / "a", ["r1", "r2"])))
        store.publish(Batch("c1", items=planar_items(tmp_path / "b", ["r3"])))
        store.compact()
        # pending beside a part; the only item with a description: null in the first samples, a string later
        store.publish(Batch("c1", items=planar_items(tmp_path / "c", ["r4"], meta={"r4": {"description": "A cat"}})))
        ids.add("r4")
        store.close()
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "HF_HOME": str(tmp_path / "hf-home")}
        proc = subprocess.run([sys.executable, "-c", READ, REPO], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["index"] == sorted(ids)
        assert all(p.startswith("WebPImageFile:") for p in got["preview"]) and len(got["preview"]) == 4
        assert [s[0] for s in got["splats"]] == sorted(ids)
        assert all(s[1] == "JpegImageFile" and s[2] == "WebPImageFile" and s[3] > 0 for s in got["splats"])
        for streaming in ("True", "False"):
            named = got["named"][streaming]
            assert [n[:3] for n in named] == [s[:2] + s[3:] for s in got["splats"]]
            assert [n[3] for n in named] == [None, None, None, "A cat"]
            assert all(len(n[4]) == 2 and min(n[4]) > 0 for n in named)

        tars = sorted(p for p in hub.files(REPO) if p.startswith("data/shards/"))
        urls = [f"{hub.url}/datasets/{REPO}/resolve/main/{p}" for p in tars]
        samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
        assert sorted(s["json"]["id"] for s in samples) == sorted(ids)
        assert all(s["jpg"].size[0] > 0 and s["webp"].size[0] > 0 for s in samples)


def test_automatic_compaction_keeps_the_pending_parquet_files_few(tmp_path: Path) -> None:
    """``auto_compact_shards`` also bounds the pending Parquet files: each compaction merges them into
    parts in the commit that merges the JSONL shards, a refused first attempt (412) included."""
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path, auto_compact_shards=2)
        wanted: set[str] = set()
        for n in range(5):
            ids = [f"c{n}{i}" for i in range(2)]
            wanted |= set(ids)
            if n == 3:
                hub.faults.script = [None, 412]  # the batch lands, its compaction is refused once
            store.publish(Batch("c1", items=planar_items(tmp_path / f"b{n}", ids)))
            files = hub.files(REPO)
            assert len([p for p in files if p.startswith("data/index/pending/")]) <= 3
        assert hub.stats["status_412"] == 1
        files = hub.files(REPO)
        assert [p for p in files if p.startswith("data/index/parts/")]
        check_repo(files, wanted)
        store.close()



def test_a_pipeline_run_with_the_planar_predictor_publishes_shards(tmp_path: Path) -> None:
    """The real runner (folder source, planar predictor, post-processing) publishing to a sharded Hub
    repo in several batches: every photo once, through tars that ``check_repo`` reads back."""
    from pipeline.pipeline_utils import make_photos, run_pipeline
    from sharp_dataset_pipeline.predict.planar import PlanarPredictor
    from sharp_dataset_pipeline.splat.formats import FormatOptions

    photos = tmp_path / "photos"
    make_photos(photos, 7, seed=3)
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id="runner",
                                    cache_dir=tmp_path / "cache", retry_base_s=0.05))
        store.open()  # as ``app`` does before the run
        summary, _ = run_pipeline(tmp_path, photos, store, PlanarPredictor(resolution=24, batch_size=2),
                                  client_id="runner", batch_size=3, batch_wait_s=0.0,
                                  formats=FormatOptions(formats=("spz", "preview")))
        assert summary.published == 7, summary
        files = hub.files(REPO)
        rows = index_rows(files)
        check_repo_splats(files, {r["id"] for r in rows})
        assert len(rows) == 7 and len([c for c in hub.history(REPO) if c.title.startswith("publish")]) >= 3
        assert not [p for p in files if p.startswith("data/ply/")]  # no PLY format asked for: no ply tars
        store.close()


def check_repo_splats(files: dict[str, bytes], ids: set[str]) -> None:
    """``check_repo`` for a run without PLYs: every id in exactly one splat tar sample."""
    rows = index_rows(files)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    keys = [k for p in sorted(files) if p.startswith("data/shards/") for k in tar_keys(files[p])]
    assert sorted(keys) == sorted(encode_key(i) for i in ids)
    for row in rows:
        for m in members(row):
            tar = files[m["shard"]]
            assert hashlib.sha256(tar[m["offset"]:m["offset"] + m["size"]]).hexdigest() == m["sha256"]


def test_two_clients_at_once_with_faults_publish_each_item_once(tmp_path: Path) -> None:
    """Two clients in threads, at the same time, on overlapping items, with the Hub's commit lock
    (409 on overlap), random 409s and commits applied then answered 500: each item once."""
    import threading

    faults = HubFaults(seed=11, overlap_409=True, commit_hold_s=0.02, random_409_rate=0.1,
                       error_after_commit_rate=0.15)
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        stores = {}
        for c in ("a", "b"):
            stores[c] = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id=c, cache_dir=tmp_path / c,
                                            state_max_age_s=0.0, retry_base_s=0.01))
            stores[c].open()
        hub.set_faults(faults)
        batches = {c: [planar_items(tmp_path / f"{c}{n}", [f"t{n}{i}" for i in range(k, k + 3)])
                       for n in range(3)] for c, k in (("a", 0), ("b", 1))}
        published: dict[str, list[str]] = {"a": [], "b": []}
        errors: list[BaseException] = []

        def work(c: str) -> None:
            try:
                for items in batches[c]:
                    published[c] += stores[c].publish(Batch(c, items=items)).published_ids
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,)) for c in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert hub.stats["status_409"] + hub.stats["commit_500_after_apply"] > 0  # the faults did happen
        wanted = {f"t{n}{i}" for n in range(3) for i in range(4)}
        assert sorted(published["a"] + published["b"]) == sorted(wanted)  # each id published by one client
        check_repo(hub.files(REPO), wanted)
        for s in stores.values():
            s.close()


def test_redo_replaces_published_items_in_the_sharded_layout(tmp_path: Path) -> None:
    """``--redo all`` replaces the published items of a batch (their old samples leave the old tars,
    here emptied and deleted) and publishes its new ones, in one commit."""
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        store.publish(Batch("c1", items=planar_items(tmp_path / "a", ["d1", "d2"])))
        before = hub.files(REPO)
        receipt = store.publish(Batch("c1", items=planar_items(tmp_path / "b", ["d1", "d2", "d3"]), redo="all"))
        assert receipt.published_ids == ["d1", "d2", "d3"] and receipt.replaced_ids == ["d1", "d2"]
        files = hub.files(REPO)
        assert not [p for p in before if p.endswith(".tar") and p in files]
        check_repo(files, {"d1", "d2", "d3"})
        store.close()


def test_an_item_the_packer_refuses_fails_alone(tmp_path: Path) -> None:
    """Invariant 8 in the sharded layout: an item whose files have no place in a shard (here: its
    photo missing from its files) is recorded as a failure in the same commit; the rest publishes."""
    import dataclasses

    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        items = planar_items(tmp_path / "a", ["e1", "e2", "e3"])
        items[1] = dataclasses.replace(items[1], files=[f for f in items[1].files if f.kind != "image"])
        commits = len(hub.history(REPO))
        receipt = store.publish(Batch("c1", items=items))
        assert sorted(receipt.published_ids) == ["e1", "e3"]
        assert [(f.item_id, f.reason, f.transient) for f in receipt.failed] == [("e2", "no_photo", False)]
        assert len(hub.history(REPO)) == commits + 1
        check_repo(hub.files(REPO), {"e1", "e3"})
        state = store.item_states(["e2"])["e2"]
        assert state.failed_permanently and not state.published
        store.close()
