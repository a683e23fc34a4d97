"""pack_batch on items post-processed for real (folder photos → planar predictor → post-process):
the shards and the index shard it writes, read back by webdataset, our SPZ decoder and pyarrow."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from sharp_dataset_pipeline.errors import PermanentError
from sharp_dataset_pipeline.fetch.fetcher import fetch_item
from sharp_dataset_pipeline.pipeline.stages import PostprocessOptions, postprocess_item
from sharp_dataset_pipeline.predict.planar import PlanarPredictor
from sharp_dataset_pipeline.publish import parquet_index as pi
from sharp_dataset_pipeline.publish.shard_layout import parse_shard_path
from sharp_dataset_pipeline.publish.shard_pack import pack_batch
from sharp_dataset_pipeline.publish.tar_shard import read_member_at
from sharp_dataset_pipeline.records import Item, ProcessedItem
from sharp_dataset_pipeline.splat.formats import FormatOptions
from sharp_dataset_pipeline.splat.spz import decode_spz

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "sharp_dataset_pipeline" / "samples"


def _processed(tmp: Path, names: list[str], formats: tuple[str, ...] = ("spz", "preview"),
               png: tuple[str, ...] = ()) -> list[ProcessedItem]:
    photos = tmp / "photos"
    photos.mkdir(exist_ok=True)
    items = []
    for n, name in enumerate(names):
        src = photos / name
        shutil.copy(SAMPLES / name, src)
        if name in png:
            src = src.with_suffix(".png")
            Image.open(photos / name).save(src)
        items.append(Item(id=f"id-{n}.{src.stem}", source="folder", unit="folder/x/0", offset=n, path=str(src),
                          meta={"user_name": "Ann", "tags": "a, b"}))
    predictor = PlanarPredictor(resolution=32)
    opts = PostprocessOptions(gaussians_dir=tmp / "g", subdir="folder", fanout=False, predictor="planar",
                              model_version="planar-1", client_id="c1", formats=FormatOptions(formats=formats))
    (tmp / "g").mkdir(exist_ok=True)
    out = []
    for item in items:
        fetched = fetch_item(item, tmp / "img", None, max_pixels=10**8, max_bytes=10**8, attempts=1)
        raw = predictor.predict([fetched])[0]
        out.append(postprocess_item(fetched, raw, opts))  # type: ignore[arg-type]
    return out


def test_pack_writes_webdataset_shards_and_a_typed_index_shard(tmp_path: Path) -> None:
    items = _processed(tmp_path, ["hills.jpg", "boxes.jpg", "checker_floor.jpg"])
    packed = pack_batch(items, "c1", tmp_path / "out")
    kinds = [f.kind for f in packed.files]
    assert kinds == ["shard", "index_shard"]
    shard, index = packed.files
    assert parse_shard_path(shard.repo_path) == ("splats", packed.batch, 0)
    assert index.repo_path == f"data/index/pending/{packed.batch[:2]}/{packed.batch}.parquet"
    # webdataset groups the members by key: every item once, with photo, spz, json and preview.
    samples = list(wds.WebDataset(str(shard.local_path), shardshuffle=False))
    by_key = {s["__key__"]: s for s in samples}
    rows = {p.row.shard_key: p.row for p in packed.items}
    assert set(by_key) == set(rows) and len(samples) == 3
    for key, s in by_key.items():
        assert set(s) >= {"jpg", "spz", "json", "webp"} and not any(k.endswith("ply") for k in s)
        row = rows[key]
        assert decode_spz(s["spz"]).scene.positions.shape[0] == row.num_gaussians > 0
        meta = json.loads(s["json"])
        assert meta["id"] == row.id and meta["tags"] == ["a", "b"] and meta["user_name"] == "Ann"
        assert meta["camera"]["image_size"] == [row.width, row.height]
        assert len(meta["camera"]["intrinsics"]) == 3 and len(meta["camera"]["extrinsics"]) == 4
        assert Image.open(io.BytesIO(s["webp"])).format == "WEBP"
        assert Image.open(io.BytesIO(s["jpg"])).size == (row.width, row.height)
        assert row.image_path == row.ply_path == "" and row.extra_files == "[]"
        # each member is where the row says, byte for byte
        with shard.local_path.open("rb") as fh:
            for m in pi.row_members(row):
                assert m.shard == shard.repo_path
                field = m.field
                assert read_member_at(fh, m.offset, m.size, m.sha256) == s[field]
    with index.local_path.open("rb") as fh:
        entries = pi.read_index(fh)
    assert [e.row for e in entries] == sorted((p.row for p in packed.items), key=lambda r: r.id)
    assert all(e.layout == "shards" and e.preview and Image.open(io.BytesIO(e.preview)).size for e in entries)


def test_pack_is_deterministic_and_a_redo_gets_new_paths(tmp_path: Path) -> None:
    items = _processed(tmp_path, ["hills.jpg", "boxes.jpg"])
    a = pack_batch(items, "c1", tmp_path / "a")
    b = pack_batch(list(reversed(items)), "c1", tmp_path / "b")
    assert a.paths() == b.paths() and [f.sha256 for f in a.files] == [f.sha256 for f in b.files]
    assert pack_batch(items, "c2", tmp_path / "c").batch != a.batch  # another client, other names
    redo = [dataclasses.replace(p, row=dataclasses.replace(p.row, processed_at="2030-01-01T00:00:00Z")) for p in items]
    assert pack_batch(redo, "c1", tmp_path / "d").batch != a.batch


def test_pack_puts_plys_in_their_own_shards_and_every_photo_under_one_member_name(tmp_path: Path) -> None:
    items = _processed(tmp_path, ["hills.jpg", "boxes.jpg"], formats=("ply", "spz", "preview"), png=("boxes.jpg",))
    packed = pack_batch(items, "c1", tmp_path / "out")
    assert [f.kind for f in packed.files] == ["shard", "ply_shard", "index_shard"]
    samples = list(wds.WebDataset(str(packed.files[0].local_path), shardshuffle=False))
    # the PNG photo too is the <key>.jpg member, byte for byte, its real format in the json member
    assert [sorted(set(s) - {"__key__", "__url__", "__local_path__"}) for s in samples] == [
        ["jpg", "json", "spz", "webp"]] * 2
    by_id = {json.loads(s["json"])["id"]: s for s in samples}
    png_id = next(i for i in by_id if i.endswith("boxes"))
    assert by_id[png_id]["jpg"] == (tmp_path / "photos" / "boxes.png").read_bytes()
    assert Image.open(io.BytesIO(by_id[png_id]["jpg"])).format == "PNG"
    assert {i: json.loads(s["json"])["photo_format"] for i, s in by_id.items()} == {
        png_id: "png", next(i for i in by_id if i != png_id): "jpg"}
    plys = list(wds.WebDataset(str(packed.files[1].local_path), shardshuffle=False))
    assert len(plys) == 2 and all(s["ply"].startswith(b"ply\n") for s in plys)
    for p in packed.items:
        assert p.row.ply_shard_path == packed.files[1].repo_path and p.row.ply_size > 0
        assert {m.field for m in pi.row_members(p.row)} >= {"ply", "spz", "json", "jpg"}


def test_pack_refuses_an_empty_batch_and_repeated_ids(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="at least one"):
        pack_batch([], "c1", tmp_path)
    items = _processed(tmp_path, ["hills.jpg"])
    with pytest.raises(PermanentError, match="twice"):
        pack_batch(items * 2, "c1", tmp_path / "o")
