"""The files layout's typed Parquet index on the Hub store, against the loopback Hub with the real client:
each JSONL index file's twin rides on the commit that changes the file (publish, compaction, ``remove``),
an old files dataset gets every missing twin on its next commit, and ``datasets`` reads what was published."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
from huggingface_hub import CommitOperationAdd, HfApi
from PIL import Image

from emulators.hub import HubEmulator, HubFaults, ManualClock, index_rows
from sharp_dataset_pipeline.publish.files_index import FILES_INDEX_DIR, is_twin_path, preview_ref, twin_path
from sharp_dataset_pipeline.publish.index import encode_rows
from sharp_dataset_pipeline.publish.parquet_index import read_index, write_index
from sharp_dataset_pipeline.records import Batch
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore
from stores.shard_items import planar_items

REPO = "tester/files-typed"
TOKEN = "hf_filesindextesttoken000"


def _store(hub: HubEmulator, clock: ManualClock, tmp: Path, client: str = "c1", **kw) -> HubStore:
    store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id=client,
                                cache_dir=tmp / f"cache-{client}",
                                state_max_age_s=0.0, retry_base_s=0.5, layout="files", auto_compact_shards=0, **kw),
                     clock=clock, sleep=clock.sleep)
    store.open()
    return store


def _jsonl(files: dict[str, bytes]) -> dict[str, list[str]]:
    """JSONL index file → its ids (compacted file and shards)."""
    out = {}
    for path in sorted(files):
        if path.startswith("data/") and path.count("/") == 1 and path.endswith(".jsonl"):
            out[path] = sorted(r["id"] for r in index_rows({path: files[path]}, path))
    return out


def _twins(files: dict[str, bytes]) -> dict[str, dict[str, object]]:
    """Twin path → {id: entry}."""
    return {p: {e.row.id: e for e in read_index(io.BytesIO(b))} for p, b in files.items() if is_twin_path(p)}


def _in_step(files: dict[str, bytes]) -> None:
    """Each JSONL file with rows has one twin with exactly its ids, each preview the published preview's bytes."""
    expected = {twin_path(p): ids for p, ids in _jsonl(files).items() if ids}
    twins = _twins(files)
    assert {p: sorted(t) for p, t in twins.items()} == expected
    for entries in twins.values():
        for entry in entries.values():
            ref = preview_ref(entry.row)
            assert ref is not None and entry.preview == files[ref.path], entry.row.id


def _local_copy(files: dict[str, bytes], root: Path) -> Path:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def test_twins_ride_on_publish_compaction_and_remove_and_datasets_reads_them(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        store = _store(hub, clock, tmp_path)
        items = planar_items(tmp_path / "items", ["a", "b", "c", "d"], formats=("ply", "preview"))
        commits = len(hub.history(REPO))
        for part in (items[:2], items[2:]):
            assert len(store.publish(Batch(client_id="c1", items=part)).published_ids) == 2
        history = hub.history(REPO)
        assert len(history) == commits + 2  # a twin costs no commit: it rides on the publish step's
        assert any(is_twin_path(p) for p in history[-1].added)
        files = hub.files(REPO)
        assert len(_twins(files)) == 2
        _in_step(files)

        assert store.compact() == 4
        files = hub.files(REPO)
        assert list(_twins(files)) == [f"{FILES_INDEX_DIR}/train.parquet"]  # the shards' twins merged, deleted
        _in_step(files)

        result = store.admin().remove(["b"], "takedown", clock())
        assert result.removed == ["b"]
        files = hub.files(REPO)
        _in_step(files)
        assert sorted(_twins(files)[f"{FILES_INDEX_DIR}/train.parquet"]) == ["a", "c", "d"]
        assert store.admin().verify(clock()).problems == []
        store.close()

        card = files["README.md"].decode()
        assert "config_name: index" in card and "data/index/**/*.parquet" in card
        ds = datasets.load_dataset(str(_local_copy(files, tmp_path / "snap")), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
        assert sorted(ds["id"]) == ["a", "c", "d"] and set(ds["layout"]) == {"files"}
        assert isinstance(ds.features["preview"], datasets.Image)
        assert all(isinstance(img, Image.Image) and img.size[0] > 0 for img in ds["preview"])


def test_a_verify_finds_a_twin_that_lost_a_row(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        store = _store(hub, clock, tmp_path)
        store.publish(Batch(client_id="c1", items=planar_items(tmp_path / "i", ["a", "b"], formats=("preview",))))
        (twin,) = _twins(hub.files(REPO))
        one = _twins(hub.files(REPO))[twin]["a"]
        buf = io.BytesIO()
        write_index([one], buf)  # a twin edited by hand: b's row is gone from the typed index
        HfApi(endpoint=hub.url, token=TOKEN).create_commit(
            REPO, [CommitOperationAdd(twin, buf.getvalue())], commit_message="damage", repo_type="dataset")
        problems = store.admin().verify(clock()).problems
        store.close()
        assert [p.kind for p in problems if p.subject == "b"] == ["index_mismatch"], problems


def test_an_old_files_dataset_gets_every_missing_twin_on_its_next_commit(tmp_path: Path) -> None:
    """A dataset made before the twins (JSONL index only): the next publish commit makes the twin of the
    old index file too, its previews fetched from the repo, so the ``index`` config never shows part of it."""
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        old = planar_items(tmp_path / "old", ["o1", "o2"], formats=("ply", "preview"))
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo(REPO, repo_type="dataset")
        ops = [CommitOperationAdd(f.repo_path, str(f.local_path)) for it in old for f in it.files]
        ops.append(CommitOperationAdd("data/train.jsonl", encode_rows([it.row for it in old])))
        api.create_commit(REPO, ops, commit_message="an older tool", repo_type="dataset")
        store = _store(hub, clock, tmp_path)
        hub.set_faults(HubFaults(script=[412]))  # the first attempt is refused: built again, same result
        store.publish(Batch(client_id="c1", items=planar_items(tmp_path / "new", ["n1"], formats=("ply", "preview"))))
        store.close()
        assert hub.stats["status_412"] == 1
        files = hub.files(REPO)
        assert sorted(_twins(files)) == sorted(twin_path(p) for p in _jsonl(files))
        _in_step(files)
        assert sorted(i for t in _twins(files).values() for i in t) == ["n1", "o1", "o2"]


def test_the_sharded_layout_has_no_twins(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id="c1", cache_dir=tmp_path / "c",
                                    state_max_age_s=0.0, layout="shards"), clock=clock, sleep=clock.sleep)
        store.open()
        store.publish(Batch(client_id="c1", items=planar_items(tmp_path / "a", ["a", "b"])))
        store.close()
        files = hub.files(REPO)
        assert not _twins(files) and any(p.startswith("data/index/") for p in files)
