"""The local store in the sharded layout (issue #14), through the real CLI and the store itself:
what `make demo` publishes, read back by `datasets`, `webdataset` and our SPZ decoder; the layout
kept per dataset; a kill -9 between placing the shards and the ledger commit; Parquet compaction."""

from __future__ import annotations

import dataclasses
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import webdataset as wds
from PIL import Image

from e2e.e2e_utils import run_cli
from sharp_dataset_pipeline.publish.parquet_index import read_index, row_members
from sharp_dataset_pipeline.publish.tar_shard import read_member_at
from sharp_dataset_pipeline.records import Batch
from sharp_dataset_pipeline.splat.spz import decode_spz
from sharp_dataset_pipeline.stores.local import LocalStore
from stores.shard_items import planar_items

SAMPLE_PHOTOS = 6  # the bundled samples that are photos (one more file is skipped: not an image)


def _demo(tmp: Path, store: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(tmp, "run", "--source", "samples", "--predictor", "planar", "--planar-resolution", "32",
                   "--store", f"local:{store}", **env)


def _parquet_ids(root: Path) -> list[str]:
    ids = []
    for path in sorted((root / "data" / "index").rglob("*.parquet")):
        with path.open("rb") as fh:
            ids += [e.row.id for e in read_index(fh)]
    return ids


def test_demo_publishes_shards_that_datasets_and_webdataset_read(tmp_path: Path) -> None:
    store = tmp_path / "out"
    done = _demo(tmp_path, store, LAYOUT="shards")
    assert done.returncode == 0, done.stderr
    assert json.loads((store / ".coord" / "layout.json").read_text()) == {"layout": "shards"}
    rows = list(LocalStore(store).rows())
    assert len(rows) == SAMPLE_PHOTOS and len({r.id for r in rows}) == SAMPLE_PHOTOS
    assert all(r.shard_path.startswith("data/shards/") and r.image_path == "" for r in rows)
    tars = sorted((store / "data" / "shards").rglob("*.tar"))
    assert tars and not list(store.rglob("*.ply"))  # SPZ by default, no per-item files
    # The card's default config: the Parquet index, one row per item, previews as images.
    index = datasets.load_dataset(str(store), split="train")
    assert sorted(index["id"]) == sorted(r.id for r in rows)
    assert isinstance(index[0]["preview"], Image.Image) and index[0]["preview"].size[0] > 0
    assert index[0]["members"] and index.features["preview"].__class__.__name__ == "Image"
    files = {"train": str(store / "data" / "shards" / "**" / "*.tar")}
    named = {"train": "data/shards/**/*.tar"}  # the README's and the card's form: the config, its files named
    for streaming in (True, False):
        splats = list(datasets.load_dataset("webdataset", data_files=files, split="train", streaming=streaming))
        if streaming:
            assert sorted(s["__key__"] for s in splats) == sorted(s["__key__"] for s in datasets.load_dataset(
                str(store), "splats", data_files=named, split="train", streaming=True))
        assert len(splats) == SAMPLE_PHOTOS
        for s in splats:
            meta = s["json"]
            assert decode_spz(s["spz"]).scene.positions.shape[0] == meta["num_gaussians"] > 0
            assert meta["camera"]["image_size"] == [meta["width"], meta["height"]]
            assert s["jpg"].size == (meta["width"], meta["height"]) and s["webp"].size[0] > 0
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    assert sorted(json.loads(s["json"])["id"] for s in samples) == sorted(r.id for r in rows)
    for row in rows:  # every member where its row says, byte for byte
        for m in row_members(row):
            with (store / m.shard).open("rb") as fh:
                assert len(read_member_at(fh, m.offset, m.size, m.sha256)) == m.size


def test_the_card_declares_what_a_later_run_brings_and_the_splats_read_with_its_features(tmp_path: Path) -> None:
    """A dataset whose runs differ: the first without previews or PLYs, a later one with both and the only
    description. The card (and the ``.huggingface.yaml`` that ``datasets`` merges over it) follows: a
    ``ply`` config, the new members declared; read with the declared features, every item comes back,
    a missing preview as null, the description typed as a string though the first samples have none."""
    store = tmp_path / "out"
    first = _demo(tmp_path, store, PUBLISH_FORMATS="spz")
    assert first.returncode == 0, first.stderr
    card = (store / "README.md").read_text()
    assert "config_name: ply" not in card and "splats=jpg,json,spz; ply= -->" in card
    photo = tmp_path / "cat.jpg"
    Image.new("RGB", (120, 80), (200, 90, 40)).save(photo)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "cat1", "url": photo.as_uri(), "description": "A cat"}) + "\n")
    later = run_cli(tmp_path, "run", "--source", f"manifest:{manifest}", "--predictor", "planar",
                    "--planar-resolution", "32", "--store", f"local:{store}", PUBLISH_FORMATS="spz,preview,ply")
    assert later.returncode == 0, later.stderr
    card = (store / "README.md").read_text()
    assert "config_name: ply" in card and "splats=jpg,json,spz,webp; ply=ply -->" in card
    assert "config_name: ply" in (store / ".huggingface.yaml").read_text()
    features = datasets.load_dataset_builder(str(store), "splats").info.features
    assert features["webp"].__class__.__name__ == "Image" and features["json"]["description"].dtype == "string"
    for streaming in (True, False):
        splats = list(datasets.load_dataset(str(store), "splats", data_files={"train": "data/shards/**/*.tar"},
                                            features=features, split="train", streaming=streaming))
        by_id = {s["json"]["id"]: s for s in splats}
        assert len(by_id) == len(splats) == SAMPLE_PHOTOS + 1
        assert by_id["cat1"]["json"]["description"] == "A cat" and by_id["cat1"]["webp"].size[0] > 0
        assert all(s["webp"] is None and s["json"]["description"] is None for i, s in by_id.items() if i != "cat1")
    ply_features = datasets.load_dataset_builder(str(store), "ply").info.features
    ply = datasets.load_dataset(str(store), "ply", data_files={"train": "data/ply/**/*.tar"}, features=ply_features,
                                split="train")
    assert len(ply) == 1 and ply[0]["ply"].startswith(b"ply\n")  # bytes, not a trimesh Mesh


def test_photos_of_mixed_formats_all_come_back_from_datasets_webdataset_builder(tmp_path: Path) -> None:
    """``datasets`` takes the WebDataset columns from the first tar: a PNG photo must sit under the same
    member name as the JPEGs (in this tar and in later ones), or it comes back as no photo at all."""
    samples_dir = Path(__file__).resolve().parents[2] / "src" / "sharp_dataset_pipeline" / "samples"
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, jpgs, pngs in ((first, ["hills", "boxes"], ["corridor"]), (second, [], ["sunset_trees"])):
        folder.mkdir()
        for name in jpgs:
            (folder / f"{name}.jpg").write_bytes((samples_dir / f"{name}.jpg").read_bytes())
        for name in pngs:
            Image.open(samples_dir / f"{name}.jpg").save(folder / f"{name}.png")
    store = tmp_path / "out"
    for folder in (first, second):
        done = run_cli(tmp_path, "run", "--source", f"folder:{folder}", "--predictor", "planar",
                       "--planar-resolution", "32", "--store", f"local:{store}", LAYOUT="shards")
        assert done.returncode == 0, done.stderr
    assert len(list((store / "data" / "shards").rglob("*.tar"))) >= 2
    files = {"train": str(store / "data" / "shards" / "**" / "*.tar")}
    got = list(datasets.load_dataset("webdataset", data_files=files, split="train"))
    assert len(got) == 4
    formats = {}
    for s in got:
        meta = s["json"]
        assert s["jpg"] is not None and s["jpg"].size == (meta["width"], meta["height"])
        formats[meta["source_path"].rsplit(".", 1)[-1]] = formats.get(meta["source_path"].rsplit(".", 1)[-1], 0) + 1
        assert s["jpg"].format == ("PNG" if meta["photo_format"] == "png" else "JPEG")
    assert formats == {"jpg": 2, "png": 2}


def test_layout_files_keeps_per_item_files_and_a_dataset_keeps_its_layout(tmp_path: Path) -> None:
    store = tmp_path / "files"
    done = _demo(tmp_path, store, LAYOUT="files")
    assert done.returncode == 0, done.stderr
    rows = list(LocalStore(store).rows())
    assert len(rows) == SAMPLE_PHOTOS and all((store / r.ply_path).is_file() and not r.shard_path for r in rows)
    assert not (store / "data" / "shards").exists()
    again = _demo(tmp_path, store)  # LAYOUT unset: the dataset's own layout, nothing new
    assert again.returncode == 0, again.stderr
    assert not (store / "data" / "shards").exists()
    new = tmp_path / "new"
    assert _demo(tmp_path, new, LAYOUT="shards").returncode == 0
    again = _demo(tmp_path, new)  # and a shards dataset stays shards with LAYOUT unset
    assert len(list(LocalStore(new).rows())) == SAMPLE_PHOTOS and (new / "data" / "shards").is_dir()
    assert again.returncode == 0, again.stderr
    assert not (store / "data" / "shards").exists()
    wrong = _demo(tmp_path, store, LAYOUT="shards")
    assert wrong.returncode == 2 and "migrate --to shards" in wrong.stderr
    assert len(list(LocalStore(store).rows())) == SAMPLE_PHOTOS


def test_a_folder_with_published_files_but_no_marker_is_the_files_layout(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", dataset_layout="files")
    store.open()
    store.publish(Batch(client_id="c", items=planar_items(tmp_path / "w", ["a1"], formats=("ply",))))
    store.close()
    (tmp_path / "s" / ".coord" / "layout.json").unlink()  # a store from before the marker
    again = LocalStore(tmp_path / "s")
    again.open()
    assert again.layout == "files"
    assert not (tmp_path / "s" / ".coord" / "layout.json").exists()


KILL_BEFORE_COMMIT = r'''
import os, signal, sys
from pathlib import Path
from sharp_dataset_pipeline.records import Batch
from sharp_dataset_pipeline.stores import local_schema
from sharp_dataset_pipeline.stores.local import LocalStore
sys.path.insert(0, sys.argv[3])
from stores.shard_items import planar_items

root, work = Path(sys.argv[1]), Path(sys.argv[2])
items = planar_items(work, ["k1", "k2", "k3"])
store = LocalStore(root, dataset_layout="shards")
store.open()
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the tars are in place; the transaction naming them is not done
local_schema.insert_items = killed
store.publish(Batch(client_id="c", items=items))
'''


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill9_after_the_shards_are_placed_leaves_no_orphan_counted(tmp_path: Path) -> None:
    root = tmp_path / "s"
    script = tmp_path / "kill.py"
    script.write_text(KILL_BEFORE_COMMIT)
    tests_dir = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "w"), tests_dir],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert list((root / "data" / "shards").rglob("*.tar"))  # the kill came after the rename
    store = LocalStore(root)  # an existing dataset: its marker says shards
    store.open()  # crash repair
    assert list(store.rows()) == [] and store.counts().published == 0
    assert not list((root / "data").rglob("*.tar")) and _parquet_ids(root) == []
    # and the same items publish cleanly afterwards, each once
    receipt = store.publish(Batch(client_id="c", items=planar_items(tmp_path / "w2", ["k1", "k2", "k3"])))
    assert sorted(receipt.published_ids) == ["k1", "k2", "k3"] and sorted(_parquet_ids(root)) == ["k1", "k2", "k3"]


def test_compact_merges_the_pending_parquet_index_into_parts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", new_layout="shards")
    store.open()
    for n in range(3):
        ids = [f"c{n}x{j}" for j in range(2)]
        store.publish(Batch(client_id="c", items=planar_items(tmp_path / f"w{n}", ids)))
    pending = tmp_path / "s" / "data" / "index" / "pending"
    assert len(list(pending.rglob("*.parquet"))) == 3
    assert store.compact() == 6
    assert not list(pending.rglob("*.parquet"))
    parts = list((tmp_path / "s" / "data" / "index" / "parts").glob("*.parquet"))
    assert len(parts) == 1 and sorted(_parquet_ids(tmp_path / "s")) == sorted(r.id for r in store.rows())
    with parts[0].open("rb") as fh:
        entries = read_index(fh)
    assert all(e.preview and Image.open(io.BytesIO(e.preview)).format == "WEBP" for e in entries)
    assert all(e.ply_shard_path for e in entries)  # planar_items publishes the PLY too: its own shards
    index = datasets.load_dataset(str(tmp_path / "s"), split="train")
    assert sorted(index["id"]) == sorted(e.row.id for e in entries)


def test_an_item_the_packer_refuses_fails_alone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", new_layout="shards")
    store.open()
    good, bad = planar_items(tmp_path / "w", ["ok1", "nophoto"])
    bad = dataclasses.replace(bad, files=[f for f in bad.files if f.kind != "image"])  # nothing to pack as photo
    receipt = store.publish(Batch(client_id="c", items=[good, bad], units_done=["folder/x/0"]))
    assert receipt.published_ids == ["ok1"]
    assert [(f.item_id, f.reason) for f in receipt.failed] == [("nophoto", "no_photo")]
    assert [r.id for r in store.rows()] == ["ok1"] and _parquet_ids(tmp_path / "s") == ["ok1"]
    status = store.unit_status(["folder/x/0"])["folder/x/0"]
    assert status.failed == 1 and status.done  # a permanent failure is recorded; nothing to retry


def test_verify_names_stray_files_beside_the_shards_and_ids_the_parquet_index_holds_twice(tmp_path: Path) -> None:
    """What a reader of `data/shards/**/*.tar` or of the Parquet index would see but no row accounts for: a tar
    whose name is no shard's, any other file under data/, and an index file copied under another name."""
    import shutil
    import time

    root = tmp_path / "s"
    store = LocalStore(root, new_layout="shards")
    store.open()
    store.publish(Batch(client_id="c", items=planar_items(tmp_path / "w1", ["s1", "s2"])))
    store.publish(Batch(client_id="c", items=planar_items(tmp_path / "w2", ["s3"])))
    admin = store.admin()
    assert admin.verify(time.time(), deep=True).ok
    tar = next((root / "data" / "shards").rglob("*.tar"))
    strays = ["data/shards/orphan.tar", "data/shards/zz/deep/o2.tar", "data/o3.tar", "data/stray.bin"]
    for rel in strays:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tar, root / rel)
    pending = next(p for p in (root / "data" / "index").rglob("*.parquet") if set(_parquet_ids_of(p)) == {"s1", "s2"})
    shutil.copy(pending, pending.with_name("e" * 20 + ".parquet"))
    problems = admin.verify(time.time(), deep=True).problems
    assert sorted((p.kind, p.subject) for p in problems if p.kind == "orphan_file") == [
        ("orphan_file", rel) for rel in sorted(strays)]
    repeated = sorted(p.subject for p in problems if p.kind == "index_mismatch")
    assert repeated == ["s1", "s2"] and len(problems) == len(strays) + 2
    store.close()


def _parquet_ids_of(path: Path) -> list[str]:
    with path.open("rb") as fh:
        return [e.row.id for e in read_index(fh)]
