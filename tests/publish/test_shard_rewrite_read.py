"""shard_read (an item's bytes in either layout) and shard_rewrite (a takedown inside a shard), on real
tars written by tar_shard.write_shard."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from sharp_dataset_pipeline.publish import index_edit, parquet_index, tar_shard
from sharp_dataset_pipeline.publish.shard_keys import encode_key
from sharp_dataset_pipeline.publish.shard_read import ItemReader, MissingPart, member_bytes
from sharp_dataset_pipeline.publish.shard_rewrite import rewrite_entries, rewrite_shard, row_updates
from sharp_dataset_pipeline.records import IndexRow

SHARD = "data/shards/ab/abcdef-0.tar"


def _content(item_id: str, field: str) -> bytes:
    return f"{item_id}:{field}:".encode() * (37 + len(item_id))


def _write(repo: Path, ids: list[str]) -> list[IndexRow]:
    items = [tar_shard.ShardItem(encode_key(i), {f: _content(i, f) for f in ("jpg", "spz", "webp", "json")})
             for i in ids]
    dst = repo / SHARD
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("wb") as out:
        result = tar_shard.write_shard(items, out)
    rows = []
    for i in ids:
        members = parquet_index.shard_members(SHARD, result.members_of(encode_key(i)).values())
        rows.append(IndexRow(id=i, source="folder", unit="u", shard_key=encode_key(i), shard_path=SHARD,
                             members=parquet_index.members_json(members)))
    return rows


def test_reader_gives_each_part_of_a_shard_row(tmp_path: Path) -> None:
    rows = _write(tmp_path, ["a1", "b22", "c333"])
    reader = ItemReader(lambda p: tmp_path / p)
    assert reader.photo(rows[1]) == _content("b22", "jpg")
    assert reader.spz(rows[2]) == _content("c333", "spz")
    assert reader.preview(rows[0]) == _content("a1", "webp")
    assert reader.has(rows[0], "spz") and not reader.has(rows[0], "ply")
    with pytest.raises(MissingPart):
        reader.ply(rows[0])


def test_reader_files_layout_uses_the_rows_paths(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    for name, data in (("x/p.jpg", b"photo"), ("x/p.spz", b"splat"), ("x/p.preview.webp", b"prev")):
        (tmp_path / name).write_bytes(data)
    row = IndexRow(id="p", source="s", unit="u", image_path="x/p.jpg", ply_path="x/p.spz",
                   extra_files=json.dumps([{"kind": "preview", "path": "x/p.preview.webp", "size": 4, "sha256": ""}]))
    reader = ItemReader(lambda p: tmp_path / p)
    assert (reader.photo(row), reader.spz(row), reader.preview(row)) == (b"photo", b"splat", b"prev")


def test_a_flipped_byte_in_a_member_is_caught(tmp_path: Path) -> None:
    rows = _write(tmp_path, ["a1", "b22"])
    spz = next(m for m in parquet_index.row_members(rows[1]) if m.field == "spz")
    shard = tmp_path / SHARD
    data = bytearray(shard.read_bytes())
    data[spz.offset + 3] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(tar_shard.MemberMismatch):
        member_bytes(shard, spz)
    assert ItemReader(lambda p: tmp_path / p).spz(rows[0]) == _content("a1", "spz")  # the other is intact


def test_rewrite_drops_the_item_and_moves_the_others(tmp_path: Path) -> None:
    ids = ["a1", "b22", "c333"]
    rows = _write(tmp_path, ids)
    new = tmp_path / "new.tar"
    out = rewrite_shard(tmp_path / SHARD, SHARD, [encode_key("a1")], new, tmp_path / "work")
    assert out.dropped == (encode_key("a1"),) and out.result is not None
    data = new.read_bytes()
    assert _content("a1", "spz") not in data and _content("a1", "jpg") not in data
    with tarfile.open(new) as tar:
        assert sorted(tar.getnames()) == sorted(f"{encode_key(i)}.{f}" for i in ids[1:]
                                                for f in ("jpg", "json", "spz", "webp"))
    # Same bytes as packing the kept items alone.
    alone = io.BytesIO()
    fields = ("jpg", "spz", "webp", "json")
    tar_shard.write_shard([tar_shard.ShardItem(encode_key(i), {f: _content(i, f) for f in fields}) for i in ids[1:]],
                          alone)
    assert data == alone.getvalue()
    # The kept rows' new members read back from the new tar.
    lines = "".join(json.dumps({"id": r.id, "members": r.members}) + "\n" for r in rows).encode()
    edited = index_edit.update_lines(index_edit.drop_lines(lines, {"a1"}), row_updates(rows[1:], out))
    kept = [json.loads(line) for line in edited.decode().splitlines()]
    assert [k["id"] for k in kept] == ["b22", "c333"]
    new.replace(tmp_path / SHARD)
    reader = ItemReader(lambda p: tmp_path / p)
    for k in kept:
        row = IndexRow(id=k["id"], source="s", unit="u", shard_key=encode_key(k["id"]), shard_path=SHARD,
                       members=k["members"])
        assert reader.spz(row) == _content(k["id"], "spz")
        assert reader.photo(row) == _content(k["id"], "jpg")


def test_rewrite_entries_and_an_emptied_shard(tmp_path: Path) -> None:
    rows = _write(tmp_path, ["a1", "b22"])
    out = rewrite_shard(tmp_path / SHARD, SHARD, [encode_key("b22")], tmp_path / "n.tar", tmp_path / "w")
    entries = rewrite_entries([parquet_index.entry_of_row(r) for r in rows], {"b22"}, [out])
    assert [e.row.id for e in entries] == ["a1"]
    spz = entries[0].member("spz")
    assert spz is not None and spz.offset == out.members[encode_key("a1")][2].offset
    assert member_bytes(tmp_path / "n.tar", spz) == _content("a1", "spz")
    assert parquet_index.row_members(entries[0].row) == entries[0].members
    gone = rewrite_shard(tmp_path / SHARD, SHARD, [encode_key("a1"), encode_key("b22")], tmp_path / "e.tar",
                         tmp_path / "w2")
    assert gone.empty and not (tmp_path / "e.tar").exists()
    assert sorted(gone.dropped) == sorted([encode_key("a1"), encode_key("b22")])


def test_share_missing_takes_the_spz_member_out_of_the_shard(tmp_path: Path) -> None:
    from sharp_dataset_pipeline.publish.share import local_share_file

    rows = _write(tmp_path, ["a1", "b22"])
    pick = local_share_file(tmp_path, use_small_ply=False, keep=1000, work_dir=tmp_path / "share")
    path = pick(rows[1])
    assert path.suffix == ".spz" and path.read_bytes() == _content("b22", "spz")
