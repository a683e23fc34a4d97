"""Typed Parquet index: nulls and lists instead of '' strings, a preview that datasets decodes as an image,
bounded row groups, merges and compaction plans."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.publish import parquet_index as pi
from sharp_dataset_pipeline.publish import shard_layout as sl
from sharp_dataset_pipeline.publish.parquet_index import IndexEntry, IndexShardInfo, ShardMember
from sharp_dataset_pipeline.publish.shard_keys import encode_key
from sharp_dataset_pipeline.records import IndexRow


def _webp(colour: tuple[int, int, int], size: tuple[int, int] = (16, 9)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="WEBP")
    return buf.getvalue()


def _entry(item_id: str, *, full: bool = True, processed_at: str = "2026-12-01T00:00:00Z",
           preview: bytes | None = None) -> IndexEntry:
    batch = sl.batch_digest("c", [item_id])
    shard = sl.shard_path(batch, 0)
    key = encode_key(item_id)
    row = IndexRow(id=item_id, source="unsplash", unit="unsplash:list:0", processed_at=processed_at)
    if full:
        row = IndexRow(
            id=item_id, source="unsplash", unit="unsplash:list:0", width=4000, height=3000, focal_px=3100.5,
            focal_source="exif", num_gaussians=1_179_648, predictor="sharp", model_version="v1",
            user_name="Ann Example", license="Unsplash License", tags="mountain, lake, sky", topics="nature",
            extra_files=json.dumps([{"kind": "spz", "path": f"unsplash/{item_id}/{item_id}.spz", "size": 12,
                                     "sha256": "ab" * 32}], sort_keys=True),  # as formats.extra_files_json
            processed_at=processed_at,
        )
    members = tuple(ShardMember(shard, f"{key}.{f}", f, 512 * (n + 1), 100 + n, f"{n:02d}" * 32)
                    for n, f in enumerate(("jpg", "json", "spz", "webp")))
    # A sharded row carries where its bytes are (what ``entry_of_row`` reads back into typed columns).
    row = dataclasses.replace(row, shard_key=key, shard_path=shard, members=pi.members_json(members))
    return IndexEntry(row, key=key, shard_path=shard, members=members,
                      preview=preview if preview is not None else _webp((200, 10, 10)),
                      preview_path=f"{key}.webp")


def _write(entries: list[IndexEntry], path: Path, **kw: int) -> pi.IndexFileInfo:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        return pi.write_index(entries, fh, **kw)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    entries = [_entry("b-2_x"), _entry("a.b", full=False)]
    info = _write(entries, tmp_path / "i.parquet")
    assert info.rows == 2 and info.row_groups == (2,) and info.size == (tmp_path / "i.parquet").stat().st_size
    with (tmp_path / "i.parquet").open("rb") as fh:
        back = pi.read_index(fh)
    assert back == sorted(entries, key=lambda e: e.row.id)
    assert back[1].member("spz") == entries[0].members[2]


def test_columns_are_typed_and_missing_values_are_null(tmp_path: Path) -> None:
    _write([_entry("full"), _entry("bare", full=False)], tmp_path / "i.parquet")
    table = pq.read_table(tmp_path / "i.parquet")
    assert pa.types.is_list(table.schema.field("tags").type)
    assert table.schema.field("tags").type.value_type == pa.string()
    assert str(table.schema.field("width").type) == "int64"
    bare, full = table.to_pylist()
    assert full["tags"] == ["mountain", "lake", "sky"] and full["topics"] == ["nature"]
    assert full["extra_files"] == [{"path": "unsplash/full/full.spz", "kind": "spz", "size": 12,
                                    "sha256": "ab" * 32}]
    assert full["width"] == 4000 and full["members"][2]["field"] == "spz"
    for name in ("user_name", "license", "tags", "topics", "extra_files", "width", "focal_px", "description",
                 "image_path", "image_size", "ply_shard_path"):
        assert bare[name] is None, name
    assert bare["source"] == "unsplash" and bare["layout"] == "shards"


def test_datasets_loads_rows_with_preview_images_and_nulls(tmp_path: Path) -> None:
    previews = {"x1": _webp((255, 0, 0)), "x2": _webp((0, 0, 255), (20, 10))}
    _write([_entry("x1", preview=previews["x1"]), _entry("x2", full=False, preview=previews["x2"])],
           tmp_path / "i.parquet")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "i.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert isinstance(ds.features["preview"], datasets.Image)
    rows = {r["id"]: r for r in ds}
    assert isinstance(rows["x1"]["preview"], Image.Image)
    assert rows["x1"]["preview"].size == (16, 9) and rows["x2"]["preview"].size == (20, 10)
    assert rows["x1"]["preview"].convert("RGB").getpixel((3, 3))[0] > 200
    assert rows["x1"]["tags"] == ["mountain", "lake", "sky"]
    assert rows["x2"]["tags"] is None and rows["x2"]["user_name"] is None and rows["x2"]["width"] is None
    assert rows["x1"]["members"][0]["shard"] == rows["x1"]["shard_path"]


def test_datasets_loads_a_folder_through_the_card_configs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    a = sl.batch_digest("c", ["p1"])
    _write([_entry("p1")], repo / sl.index_shard_path(a))
    _write([_entry("q1"), _entry("q2", full=False)], repo / sl.index_part_path("0" * sl.BATCH_DIGITS))
    (repo / "data/.coord-like.jsonl").write_text('{"not": "index"}\n')  # outside the config's glob
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: index\n  default: true\n  data_files:\n"
        "  - split: train\n    path: data/index/**/*.parquet\n---\n# test\n")
    ds = datasets.load_dataset(str(repo), split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(ds["id"]) == ["p1", "q1", "q2"]
    row = next(r for r in ds if r["id"] == "q2")
    assert isinstance(row["preview"], Image.Image) and row["license"] is None
    assert os.path.exists(repo / sl.index_shard_path(a))


def test_row_groups_stay_under_the_limit(tmp_path: Path) -> None:
    entries = [_entry(f"r{n:03d}", preview=os.urandom(20_000)) for n in range(40)]
    info = _write(entries, tmp_path / "i.parquet", max_row_group_bytes=100_000)
    meta = pq.ParquetFile(tmp_path / "i.parquet").metadata
    assert meta.num_row_groups == len(info.row_groups) > 5
    assert sum(info.row_groups) == 40
    for g in range(meta.num_row_groups):
        assert meta.row_group(g).total_byte_size <= 100_000
    assert pi.MAX_ROW_GROUP_BYTES == 100_000_000


def test_merge_sorts_and_keeps_the_latest_row(tmp_path: Path) -> None:
    old, new = _entry("m", processed_at="2026-01-01T00:00:00Z"), _entry("m", processed_at="2026-06-01T00:00:00Z")
    new = IndexEntry(IndexRow(**{**new.row.to_dict(), "model_version": "v2"}), key=new.key,
                     shard_path=new.shard_path, members=new.members, preview=new.preview,
                     preview_path=new.preview_path)
    files = []
    for n, group in enumerate([[new, _entry("z")], [old, _entry("a")]]):
        path = tmp_path / f"s{n}.parquet"
        _write(group, path)
        files.append(path.open("rb"))
    out = io.BytesIO()
    info = pi.merge_index(files, out)
    for fh in files:
        fh.close()
    out.seek(0)
    merged = pi.read_index(out)
    assert [e.row.id for e in merged] == ["a", "m", "z"] and info.rows == 3
    assert merged[1].row.model_version == "v2"


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([_entry("d"), _entry("d")], "twice"),
        ([IndexEntry(IndexRow(id="e", source="s", unit="u"), layout="zip")], "layout"),
        ([IndexEntry(IndexRow(id="e", source="s", unit="u", extra_files="{bad"))], "not JSON"),
        ([IndexEntry(IndexRow(id="e", source="s", unit="u", extra_files='[{"kind": "x"}]'))], "no path"),
        ([IndexEntry(IndexRow(id="", source="s", unit="u"))], "needs an id"),
    ],
)
def test_bad_entries_are_refused(entries: list[IndexEntry], match: str) -> None:
    with pytest.raises(StoreError, match=match):
        pi.write_index(entries, io.BytesIO())


def test_not_parquet_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="not readable Parquet"):
        pi.read_index(io.BytesIO(b"PAR1 nope"))


def _pending(n: int, size: int = 10) -> IndexShardInfo:
    return IndexShardInfo(sl.index_shard_path(f"{n:020x}"), rows=size, size=size)


def _part(name: str, size: int) -> IndexShardInfo:
    return IndexShardInfo(sl.index_part_path(name * 20), rows=size, size=size)


@pytest.mark.parametrize(
    ("files", "groups"),
    [
        ([], []),
        ([_pending(1)], [[_pending(1)]]),  # one pending shard still moves into a part
        ([_part("a", 100)], []),  # a big part stays
        ([_part("a", 10)], []),  # a small part alone: rewriting it would change nothing
        ([_part("a", 10), _pending(2)], [[_part("a", 10), _pending(2)]]),
        ([_part("a", 100), _pending(2), _pending(1)], [[_pending(1), _pending(2)]]),
        ([_pending(n, 30) for n in range(5)], [[_pending(n, 30) for n in range(3)],
                                               [_pending(n, 30) for n in range(3, 5)]]),
    ],
)
def test_plan_compaction(files: list[IndexShardInfo], groups: list[list[IndexShardInfo]]) -> None:
    steps = pi.plan_compaction(files, target_bytes=100)
    assert [list(s.inputs) for s in steps] == [[f.path for f in g] for g in groups]
    assert [s.rows for s in steps] == [sum(f.rows for f in g) for g in groups]
    assert all(s.output.startswith("data/index/parts/part-") for s in steps)
    assert pi.plan_compaction(list(reversed(files)), target_bytes=100) == steps  # deterministic names
    assert len({s.output for s in steps}) == len(steps)


def test_member_json_is_typed_and_deterministic() -> None:
    entry = _entry("j1")
    camera = {"intrinsics": [[3100.5, 0, 2000], [0, 3100.5, 1500], [0, 0, 1]], "image_size": [4000, 3000],
              "disparity": [0.1, 10.0], "color_space": "linearRGB", "version": [1, 0]}
    data = pi.member_json(entry.row, camera)
    assert data == pi.member_json(entry.row, dict(reversed(list(camera.items()))))
    doc = json.loads(data)
    assert doc["id"] == "j1" and doc["tags"] == ["mountain", "lake", "sky"] and doc["camera"] == camera
    assert doc["description"] is None and doc["width"] == 4000
    assert not {"preview", "members", "shard_path"} & set(doc)
    with pytest.raises(StoreError, match="not JSON"):
        pi.member_json(entry.row, {"disparity": [float("nan")]})


def test_shard_members_from_a_written_shard() -> None:
    from sharp_dataset_pipeline.publish import tar_shard

    key = encode_key("s1")
    res = tar_shard.write_shard([tar_shard.ShardItem(key, {"spz": b"abc", "json": b"{}"})], io.BytesIO())
    members = pi.shard_members("data/shards/00/x.tar", res.members_of(key).values())
    # json: header at 0, data at 512 padded to 1024; spz: header at 1024, data at 1536
    assert {m.field: (m.offset, m.size) for m in members} == {"json": (512, 2), "spz": (1536, 3)}
    assert all(m.shard == "data/shards/00/x.tar" for m in members)
