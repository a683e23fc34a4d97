"""The features the card declares for its WebDataset configs: what `datasets` reads back from the YAML,
and the same shape as the `.json` members the packer really writes (so a declared type never refuses a
published value, and no published field goes undeclared)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import datasets
import pyarrow as pa
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard

from sharp_dataset_pipeline.publish.card import CardFacts, card_facts, card_is_stale, render_card
from sharp_dataset_pipeline.publish.card_features import shard_features
from sharp_dataset_pipeline.publish.parquet_index import member_json_type
from sharp_dataset_pipeline.publish.shard_pack import pack_batch
from stores.shard_items import planar_items


def _json_members(tmp: Path) -> tuple[list[dict], list]:
    items = planar_items(tmp / "items", ["a1", "b2"], meta={"b2": {"description": "A cat", "tags": "x,y"}})
    packed = pack_batch(items, "c1", tmp / "work")
    docs = []
    for f in packed.files:
        if f.kind == "shard":
            with tarfile.open(f.local_path) as tf:
                docs += [json.load(tf.extractfile(m)) for m in tf.getmembers() if m.name.endswith(".json")]
    return docs, [pi.row for pi in packed.items]


def test_the_declared_splats_features_read_back_as_images_bytes_and_a_typed_struct() -> None:
    yaml_list = shard_features(["webp", "jpg", "spz", "json"])
    features = datasets.Features._from_yaml_list(yaml_list)
    assert list(features) == ["jpg", "json", "spz", "webp", "__key__", "__url__"]
    assert isinstance(features["jpg"], datasets.Image) and isinstance(features["webp"], datasets.Image)
    assert features["spz"] == datasets.Value("binary") and features["__url__"] == datasets.Value("string")
    meta = features["json"]
    assert meta["tags"] == datasets.List(datasets.Value("string")) and meta["description"] == datasets.Value("string")
    assert meta["camera"]["intrinsics"] == datasets.List(datasets.List(datasets.Value("float64")))
    assert meta["extra_files"] == datasets.List({"path": datasets.Value("string"), "kind": datasets.Value("string"),
                                                 "size": datasets.Value("int64"), "sha256": datasets.Value("string")})
    assert features._to_yaml_list() == yaml_list  # what datasets would write for these features itself
    ply = datasets.Features._from_yaml_list(shard_features(["ply", "small.ply"]))
    assert ply["ply"] == ply["small.ply"] == datasets.Value("binary")  # bytes, never a trimesh Mesh


def test_the_json_member_type_is_exactly_what_the_packer_writes(tmp_path: Path) -> None:
    docs, _ = _json_members(tmp_path)
    assert len(docs) == 2
    t = member_json_type()
    names = {t.field(i).name for i in range(t.num_fields)}
    camera = t.field("camera").type
    for doc in docs:
        assert set(doc) == names  # every written field declared, every declared field written
        assert set(doc["camera"]) == {camera.field(i).name for i in range(camera.num_fields)}
    back = pa.array(docs, type=t).to_pylist()  # each value fits its declared type, unchanged
    assert back == docs
    assert {d["id"]: (d["description"], d["tags"]) for d in docs} == {"a1": (None, None), "b2": ("A cat", ["x", "y"])}


def test_the_card_lists_member_fields_and_is_stale_when_rows_bring_a_new_one(tmp_path: Path) -> None:
    _, rows = _json_members(tmp_path)
    seen = CardFacts.of_rows(rows)
    assert seen.splat_fields == {"jpg", "json", "spz", "webp"} and seen.ply_fields == {"ply"}
    text = render_card(title="t", sources=["folder"], predictors=["planar"], layout="shards",
                       splat_fields=seen.splat_fields, ply_fields=seen.ply_fields)
    assert card_facts(text) == seen
    assert "config_name: ply" in text and not card_is_stale(card_facts(text), rows)
    without_ply = render_card(title="t", sources=["folder"], predictors=["planar"], layout="shards",
                              splat_fields=seen.splat_fields)
    assert "config_name: ply" not in without_ply and card_is_stale(card_facts(without_ply), rows)
    old = "<!-- sharp-dataset card: sources=folder; predictors=planar -->"  # a card from before the fields
    assert card_facts(old) == CardFacts(frozenset({"folder"}), frozenset({"planar"}))
    assert card_is_stale(card_facts(old), rows)
    infos = DatasetInfosDict.from_dataset_card_data(DatasetCard(text).data)
    assert set(infos) == {"splats", "ply"} and isinstance(infos["splats"].features["webp"], datasets.Image)
    assert infos["ply"].features["ply"] == datasets.Value("binary")
