"""The dataset card: front matter the Hub and `datasets` understand, licences, removal path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard

from sharp_dataset_pipeline.publish.card import (
    APPLE_NOTICE,
    CardFacts,
    CardYamlError,
    card_facts,
    card_is_stale,
    render_card,
    retarget_card,
)
from sharp_dataset_pipeline.publish.index import encode_rows
from sharp_dataset_pipeline.records import IndexRow


def test_front_matter_parses_with_configs_and_features() -> None:
    text = render_card(title='Splats: "test" set', sources=["unsplash"], index_glob="data/train*.jsonl")
    card = DatasetCard(text)
    data = card.data.to_dict()
    assert data["pretty_name"] == 'Splats: "test" set'
    assert data["configs"] == [
        {"config_name": "default", "default": True, "data_files": [{"split": "train", "path": "data/train*.jsonl"}]}
    ]
    feats = {f["name"]: f["dtype"] for f in data["dataset_info"]["features"]}
    # Expected from the record's own annotations and the `datasets` dtype names, not from the card code.
    expected = {f.name: {"str": "string", "int": "int64", "float": "float64"}[str(f.type)]
                for f in dataclasses.fields(IndexRow)}
    assert feats == expected
    assert list(feats) == IndexRow.field_names()  # the row's column order
    parsed = datasets.Features._from_yaml_list(data["dataset_info"]["features"])
    assert parsed["id"] == datasets.Value("string") and parsed["width"] == datasets.Value("int64")
    assert parsed["focal_px"] == datasets.Value("float64")


def test_licences_follow_sources() -> None:
    unsplash = render_card(title="t", sources=["unsplash"], predictors=["sharp"])
    folder = render_card(title="t", sources=["folder"], predictors=["sharp-cli"],
                         licence_notes=["My photos are CC-BY-4.0."])
    assert "https://unsplash.com/license" in unsplash and "User-provided photos" not in unsplash
    assert "User-provided photos" in folder and "Unsplash License" not in folder
    assert "My photos are CC-BY-4.0." in folder
    for text in (unsplash, folder):
        assert APPLE_NOTICE in text
        assert "research use only" in text
        assert "## Removal requests" in text


def test_columns_are_documented() -> None:
    text = render_card(title="t", sources=[])
    for name in IndexRow.field_names():
        assert f"| `{name}` |" in text


def test_load_dataset_reads_only_the_index(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(render_card(title="t", sources=["folder"], index_glob="data/*.jsonl"))
    (tmp_path / "data").mkdir()
    rows = [IndexRow(id=f"i{k}", source="folder", unit="u", width=k, focal_px=1.0) for k in range(3)]
    (tmp_path / "data" / "train.jsonl").write_bytes(encode_rows(rows[:2]))
    (tmp_path / "data" / "train-shard-x.jsonl").write_bytes(encode_rows(rows[2:]))
    # Decoys that a careless glob or auto-detection would pick up.
    (tmp_path / ".coord").mkdir()
    (tmp_path / ".coord" / "lease.jsonl").write_text('{"unit": "u"}\n')
    (tmp_path / "photos" / "i0").mkdir(parents=True)
    (tmp_path / "photos" / "i0" / "i0.jsonl").write_text('{"other": 1}\n')
    ds = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / ".cache"))["train"]
    assert sorted(ds["id"]) == ["i0", "i1", "i2"]
    assert ds.features["width"].dtype == "int64"
    assert ds.features["focal_px"].dtype == "float64"
    assert ds.features["user_name"].dtype == "string"


@pytest.mark.parametrize("title", ["plain", "colon: here", "quote \" and 'single'", "ünïcode"])
def test_titles_survive_yaml(title: str) -> None:
    assert DatasetCard(render_card(title=title, sources=[])).data.to_dict()["pretty_name"] == title


def test_predictors_decide_the_model_text_and_licence() -> None:
    planar = render_card(title="t", sources=["folder"], predictors=["planar"])
    assert APPLE_NOTICE not in planar and "research use only" not in planar
    assert "predicted from single photos with Apple's SHARP model" not in planar
    assert "Made with: planar" in planar and "**These splats were not made with SHARP**" in planar
    assert "- sharp" not in DatasetCard(planar).content.split("---")[1]  # no sharp tag either
    assert "sharp" not in DatasetCard(planar).data.to_dict()["tags"]
    mixed = render_card(title="t", sources=["folder"], predictors=["planar", "sharp"])
    assert APPLE_NOTICE in mixed and "Splats made by the `planar` predictor" in mixed
    assert "sharp" in DatasetCard(mixed).data.to_dict()["tags"]
    empty = render_card(title="t", sources=[])
    assert "Nothing is published yet." in empty and APPLE_NOTICE not in empty


def test_card_facts_tell_generated_cards_from_hand_written_ones() -> None:
    card = render_card(title="t", sources=["folder"], predictors=["planar"])
    facts = card_facts(card)
    assert facts == CardFacts(frozenset({"folder"}), frozenset({"planar"}))
    assert not card_is_stale(facts, [IndexRow(id="a", source="folder", unit="u", predictor="planar")])
    assert card_is_stale(facts, [IndexRow(id="a", source="folder", unit="u", predictor="sharp")])
    assert card_is_stale(facts, None)  # compaction: always brought up to date
    assert card_facts("# my own card") is None
    assert not card_is_stale(None, None)


def test_a_hand_written_card_is_retargeted_at_the_shards_and_keeps_its_text() -> None:
    text = ("---\nlicense: cc-by-4.0\ntags:\n- 3d\nconfigs:\n- config_name: default\n  data_files: data/train.jsonl\n"
            "dataset_info:\n  features:\n  - name: id\n    dtype: string\n---\n# Mine\n\nKept: every word.\n")
    out = retarget_card(text, ply=True)
    assert out is not None
    card = DatasetCard(out)
    assert card.text == "# Mine\n\nKept: every word.\n"
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["tags"] == ["3d"] and "dataset_info" not in data
    assert [(c["config_name"], c.get("default", False), c["data_files"]) for c in data["configs"]] == [
        ("index", True, [{"split": "train", "path": "data/index/**/*.parquet"}]),
        ("splats", False, [{"split": "train", "path": "data/shards/**/*.tar"}]),
        ("ply", False, [{"split": "train", "path": "data/ply/**/*.tar"}]),
    ]
    assert retarget_card(out, ply=True) is None  # already retargeted: nothing to write
    no_yaml = retarget_card("# Only prose\n", ply=False)
    assert no_yaml is not None and DatasetCard(no_yaml).text == "# Only prose\n"
    assert [c["config_name"] for c in DatasetCard(no_yaml).data.to_dict()["configs"]] == ["index", "splats"]
    with pytest.raises(CardYamlError):  # unreadable YAML: the caller leaves the card as it is
        retarget_card("---\nlicense: [unclosed\n---\nbody\n", ply=False)
    with pytest.raises(CardYamlError):
        retarget_card("---\n- a list\n---\nbody\n", ply=False)


def test_the_typed_cards_column_table_is_the_parquet_index_with_its_types() -> None:
    """A card over the typed index describes what `load_dataset` returns: every Parquet column, lists as lists,
    the preview as an image; no JSONL-only name (`shard_key`) and no column without a meaning."""
    from sharp_dataset_pipeline.publish.parquet_index import index_schema

    text = render_card(title="t", sources=["folder"], predictors=["planar"], layout="shards")
    table = text[text.index("## Columns"):text.index("## Licences")]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| `")]
    cells = {r[0].strip("| `"): (r[1], r[2].rstrip(" |")) for r in rows}
    assert list(cells) == index_schema().names and "shard_key" not in cells
    assert all(meaning for _, meaning in cells.values())
    assert cells["tags"][0] == "list of strings" and cells["preview"][0] == "image"
    assert cells["extra_files"][0] == "list of {path, kind, size, sha256}" and cells["focal_px"][0] == "float64"
