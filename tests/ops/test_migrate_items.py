"""migrate --to shards, per item: a predecessor-style dataset (``unsplash/<id>/<id>.jpg|.ply|.spz`` +
``data/train.jsonl``) and this project's files-layout rows, made for real (folder photos → planar
predictor → post-process), staged and packed by pack_batch; the shards read back with webdataset."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from sharp_dataset_pipeline.errors import PermanentError, StoreError
from sharp_dataset_pipeline.fetch.fetcher import fetch_item
from sharp_dataset_pipeline.ops.migrate_items import MigrateOptions, old_files, stage_item
from sharp_dataset_pipeline.pipeline.stages import PostprocessOptions, postprocess_item
from sharp_dataset_pipeline.predict.planar import PlanarPredictor
from sharp_dataset_pipeline.publish.predecessor_index import parse_predecessor_index, predecessor_row
from sharp_dataset_pipeline.publish.shard_pack import pack_batch
from sharp_dataset_pipeline.records import Item, ProcessedItem
from sharp_dataset_pipeline.splat.formats import FormatOptions
from sharp_dataset_pipeline.splat.ply import validate_ply
from sharp_dataset_pipeline.splat.spz import decode_spz

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "sharp_dataset_pipeline" / "samples"
NAMES = ["hills.jpg", "boxes.jpg", "checker_floor.jpg"]


def _processed(tmp: Path, formats: tuple[str, ...] = ("ply", "preview")) -> list[ProcessedItem]:
    """Files-layout items as a run of this project makes them."""
    photos = tmp / "photos"
    photos.mkdir(exist_ok=True)
    predictor = PlanarPredictor(resolution=32)
    opts = PostprocessOptions(gaussians_dir=tmp / "g", subdir="folder", fanout=False, predictor="planar",
                              model_version="planar-1", client_id="c1", formats=FormatOptions(formats=formats))
    (tmp / "g").mkdir(exist_ok=True)
    out = []
    for n, name in enumerate(NAMES):
        shutil.copy(SAMPLES / name, photos / name)
        item = Item(id=f"Ph0to{n}", source="folder", unit="folder/x/0", offset=n, path=str(photos / name))
        fetched = fetch_item(item, tmp / "img", None, max_pixels=10**8, max_bytes=10**8, attempts=1)
        out.append(postprocess_item(fetched, predictor.predict([fetched])[0], opts))  # type: ignore[arg-type]
    return out


def predecessor_dataset(tmp: Path, root: Path, repo: str = "me/old") -> dict[str, ProcessedItem]:
    """``root`` laid out as the predecessor published: per photo ``unsplash/<id>/<id>.jpg|.ply|.spz``
    and one compact row in ``data/train.jsonl`` (resolve URLs, jpg/ply/spz hashes and sizes)."""
    items = {p.row.id: p for p in _processed(tmp)}
    lines = []
    for item_id, p in items.items():
        folder = root / "unsplash" / item_id
        folder.mkdir(parents=True)
        photo = next(f for f in p.files if f.kind == "image")
        ply = next(f for f in p.files if f.kind == "ply")
        shutil.copy(photo.local_path, folder / f"{item_id}.jpg")
        shutil.copy(ply.local_path, folder / f"{item_id}.ply")
        (folder / f"{item_id}.spz").write_bytes(b"an old spz from another converter")
        url = f"https://huggingface.co/datasets/{repo}/resolve/main/unsplash/{item_id}/{item_id}.jpg"
        lines.append(json.dumps({
            "image": url, "image_id": item_id, "jpg_sha256": photo.sha256, "jpg_bytes": photo.size,
            "ply_sha256": ply.sha256, "ply_bytes": ply.size, "spz_sha256": "", "spz_bytes": 33,
            "tags": "mountain sky", "tags_text": "mountain sky", "topics": "", "description": None,
            "alt_description": "green hills", "created_at": "2020-01-02T03:04:05Z", "user_username": "ann",
            "gsplat_share_id": "s1"}))
    (root / "data").mkdir()
    (root / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")
    return items


def test_predecessor_rows_become_files_layout_rows(tmp_path: Path) -> None:
    root = tmp_path / "old"
    made = predecessor_dataset(tmp_path, root)
    rows = parse_predecessor_index((root / "data" / "train.jsonl").read_bytes())
    assert [r.id for r in rows] == list(made)
    row = rows[0]
    assert (row.image_path, row.ply_path) == (f"unsplash/{row.id}/{row.id}.jpg", f"unsplash/{row.id}/{row.id}.ply")
    assert row.source == "unsplash" and row.unit == "predecessor" and row.predictor == "sharp"
    assert row.tags == "mountain, sky" and row.alt_description == "green hills" and row.description == ""
    assert row.user_username == "ann" and row.gsplat_share_id == "s1" and row.license == "Unsplash License"
    assert row.unsplash_url == f"https://unsplash.com/photos/{row.id}"
    kinds = [(f.kind, f.path) for f in old_files(row)]
    assert kinds == [("image", row.image_path), ("ply", row.ply_path), ("spz", f"unsplash/{row.id}/{row.id}.spz")]


def test_predecessor_index_errors_name_the_line() -> None:
    with pytest.raises(StoreError, match="line 2"):
        parse_predecessor_index(b'{"image_id": "a1"}\n{"id": "x", "source": "s", "unit": "u"}\n')
    with pytest.raises(StoreError, match="usable image_id"):
        predecessor_row({"image_id": "../etc"})
    # a repeated id keeps its first row, as the predecessor's own dedupe did
    rows = parse_predecessor_index(b'{"image_id": "a1", "tags": "x"}\n\n{"image_id": "a1", "tags": "y"}\n')
    assert [(r.id, r.tags) for r in rows] == [("a1", "x")]


def test_predecessor_items_pack_into_shards_with_nothing_lost(tmp_path: Path) -> None:
    root = tmp_path / "old"
    made = predecessor_dataset(tmp_path, root)
    rows = parse_predecessor_index((root / "data" / "train.jsonl").read_bytes())
    staged = [stage_item(r, lambda p: root / p, tmp_path / "work") for r in rows]
    packed = pack_batch(staged, "migrate", tmp_path / "out")
    assert [f.kind for f in packed.files] == ["shard", "ply_shard", "index_shard"]
    splats = {s["__key__"]: s for s in wds.WebDataset(str(packed.files[0].local_path), shardshuffle=False)}
    plys = {s["__key__"]: s for s in wds.WebDataset(str(packed.files[1].local_path), shardshuffle=False)}
    assert len(splats) == len(plys) == len(made) == 3
    for pi in packed.items:
        row, old = pi.row, root / "unsplash" / pi.row.id
        s = splats[row.shard_key]
        assert s["jpg"] == (old / f"{row.id}.jpg").read_bytes()  # the photo byte for byte
        count = validate_ply(old / f"{row.id}.ply").count
        # the SPZ is made anew from the PLY (the predecessor's own is not carried over)
        assert decode_spz(s["spz"]).scene.count == count == row.num_gaussians > 0
        assert plys[row.shard_key]["ply"] == (old / f"{row.id}.ply").read_bytes()
        assert Image.open(io.BytesIO(s["webp"])).format == "WEBP"
        meta = json.loads(s["json"])
        assert meta["id"] == row.id and meta["camera"]["image_size"] == [row.width, row.height]
        assert meta["tags"] == ["mountain", "sky"]
        assert row.image_path == row.ply_path == "" and row.image_sha256 == made[row.id].row.image_sha256


def test_files_layout_rows_keep_their_preview_and_formats(tmp_path: Path) -> None:
    items = _processed(tmp_path, formats=("ply", "spz", "preview"))
    by_repo = {f.repo_path: f.local_path for p in items for f in p.files}
    staged = [stage_item(p.row, by_repo.__getitem__, tmp_path / "work", MigrateOptions(keep_ply=False))
              for p in items]
    for old, new in zip(items, staged, strict=True):
        kinds = sorted(f.kind for f in new.files)
        assert kinds == ["image", "preview", "spz"]  # keep_ply=False: no PLY shard
        old_preview = next(f for f in old.files if f.kind == "preview")
        assert next(f for f in new.files if f.kind == "preview").local_path == old_preview.local_path
        assert new.camera is not None and new.camera["image_size"] == [old.row.width, old.row.height]
    packed = pack_batch(staged, "migrate", tmp_path / "out")
    assert [f.kind for f in packed.files] == ["shard", "index_shard"]


def test_a_file_that_differs_from_its_row_is_not_migrated(tmp_path: Path) -> None:
    root = tmp_path / "old"
    predecessor_dataset(tmp_path, root)
    row = parse_predecessor_index((root / "data" / "train.jsonl").read_bytes())[0]
    (root / row.image_path).write_bytes(b"truncated")
    with pytest.raises(PermanentError) as err:
        stage_item(row, lambda p: root / p, tmp_path / "work")
    assert err.value.reason == "migrate_mismatch"
