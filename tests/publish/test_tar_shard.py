"""WebDataset tar shards: deterministic bytes, exact sizes, member offsets and hashes, and the real readers
(``webdataset`` and ``datasets``' WebDataset builder) reading back what was written."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import datasets
import pytest
import webdataset as wds
from PIL import Image

from sharp_dataset_pipeline.publish import tar_shard
from sharp_dataset_pipeline.publish.shard_keys import decode_key, encode_key
from sharp_dataset_pipeline.publish.tar_shard import MemberMismatch, ShardError, ShardItem

IDS = ["-2vD8lIhdnw", "a_b.c", "日本", "zz", "x" * 120]  # the last one needs a pax header for its names


def _image(fmt: str, colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _items(tmp_path: Path | None = None) -> list[ShardItem]:
    out = []
    for n, item_id in enumerate(IDS):
        # The photo field is fixed per dataset; its bytes stay the original (here one item is a PNG).
        photo = _image("PNG" if n == 1 else "JPEG", (10 * n, 100, 200))
        spz: bytes | Path = bytes([n]) * (700 + 300 * n)
        if tmp_path is not None and n == 0:
            spz_path = tmp_path / "spz0.bin"
            spz_path.write_bytes(spz)  # a member read from a file while the tar is written
            spz = spz_path
        meta = json.dumps({"id": item_id, "n": n}).encode()
        out.append(ShardItem(encode_key(item_id), {"jpg": photo, "spz": spz, "json": meta,
                                                   "webp": _image("WEBP", (n, n, n))}))
    return out


def _write(items: list[ShardItem], path: Path) -> tar_shard.ShardResult:
    with path.open("wb") as fh:
        return tar_shard.write_shard(items, fh)


def test_shard_is_deterministic_and_sized_in_advance(tmp_path: Path) -> None:
    items = _items(tmp_path)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    res_a = _write(items, a)
    res_b = _write(list(reversed(items)), b)  # input order does not matter
    assert a.read_bytes() == b.read_bytes()
    assert res_a == res_b
    assert res_a.size == a.stat().st_size
    assert res_a.sha256 == hashlib.sha256(a.read_bytes()).hexdigest()
    sizes = [(m.name, m.size) for m in res_a.members]
    assert tar_shard.tar_size(sizes) == res_a.size
    per_item = sum(tar_shard.item_tar_bytes(i.key, {f: len(c) if isinstance(c, bytes) else c.stat().st_size
                                                    for f, c in i.members.items()}) for i in items)
    assert tar_shard.finish_tar_bytes(per_item) == res_a.size
    with tarfile.open(a) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == [m.name for m in res_a.members]
    assert [i.offset_data for i in infos] == [m.offset for m in res_a.members]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {(0, 0, 0, "", "", 0o644)}
    assert [i.name for i in infos][:4] == sorted(i.name for i in infos)[:4]
    assert any(len(i.name) > 100 for i in infos)


def test_offsets_point_at_verified_bytes(tmp_path: Path) -> None:
    items = _items()
    path = tmp_path / "s.tar"
    res = _write(items, path)
    by_key = {i.key: i for i in items}
    with path.open("rb") as fh:
        for rec in res.members:
            expected = by_key[rec.key].members[rec.field]
            assert tar_shard.read_member_at(fh, rec.offset, rec.size, rec.sha256) == expected
            assert tar_shard.read_member(fh, rec) == expected
        fh.seek(0)
        assert list(tar_shard.iter_members(fh)) == list(res.members)
    assert set(res.members_of(encode_key("zz"))) == {"jpg", "spz", "json", "webp"}


def test_corrupted_member_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "s.tar"
    res = _write(_items(), path)
    target = res.members_of(encode_key("zz"))["spz"]
    data = bytearray(path.read_bytes())
    data[target.offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with path.open("rb") as fh:
        with pytest.raises(MemberMismatch, match="sha256"):
            tar_shard.read_member(fh, target)
        fh.seek(0)
        changed = [m for m in tar_shard.iter_members(fh) if m not in res.members]
    assert [m.name for m in changed] == [target.name]
    moved = tar_shard.MemberRecord(target.name, target.key, target.field, target.offset + 512, target.size,
                                   target.sha256)
    with path.open("rb") as fh, pytest.raises(MemberMismatch, match="index says"):
        tar_shard.read_member(fh, moved)
    missing = tar_shard.MemberRecord("nokey.spz", "nokey", "spz", 0, 1, "0" * 64)
    with path.open("rb") as fh, pytest.raises(MemberMismatch, match="not in the shard"):
        tar_shard.read_member(fh, missing)
    path.write_bytes(bytes(data[: target.offset + 10]))  # truncated upload
    with path.open("rb") as fh, pytest.raises(MemberMismatch):
        list(tar_shard.iter_members(fh))


def test_webdataset_reads_every_sample(tmp_path: Path) -> None:
    items = _items()
    path = tmp_path / "s.tar"
    _write(items, path)
    samples = list(wds.WebDataset(str(path), shardshuffle=False).decode("pil"))
    assert [decode_key(s["__key__"]) for s in samples] == sorted(IDS, key=encode_key)
    for s in samples:
        item_id = decode_key(s["__key__"])
        assert s["json"]["id"] == item_id
        assert isinstance(s["jpg"], Image.Image) and s["jpg"].size == (8, 6)
        assert isinstance(s["webp"], Image.Image)
        assert s["spz"] == bytes([IDS.index(item_id)]) * (700 + 300 * IDS.index(item_id))


def test_datasets_webdataset_builder_reads_every_sample(tmp_path: Path) -> None:
    items = _items()
    path = tmp_path / "s.tar"
    _write(items, path)
    ds = datasets.load_dataset("webdataset", data_files={"train": str(path)}, split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert set(ds.column_names) == {"__key__", "__url__", "jpg", "spz", "json", "webp"}
    assert isinstance(ds.features["jpg"], datasets.Image) and isinstance(ds.features["webp"], datasets.Image)
    rows = list(ds)
    assert [decode_key(r["__key__"]) for r in rows] == sorted(IDS, key=encode_key)
    png_row = next(r for r in rows if decode_key(r["__key__"]) == "a_b.c")
    assert png_row["jpg"].size == (8, 6)  # PNG bytes under the fixed photo field still decode
    assert png_row["json"] == {"id": "a_b.c", "n": 1}
    assert png_row["spz"] == bytes([1]) * 1000
    streamed = list(datasets.load_dataset("webdataset", data_files={"train": str(path)}, split="train",
                                          streaming=True))
    assert len(streamed) == len(IDS) and streamed[0]["json"]["id"] == decode_key(rows[0]["__key__"])


def test_datasets_would_decode_ply_as_mesh(tmp_path: Path) -> None:
    """Why PLY members are refused: datasets types a ``.ply`` field as a Mesh (trimesh keeps only xyz)."""
    ply = b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n" \
          b"end_header\n0 0 0\n"
    items = [ShardItem(encode_key(f"p{n}"), {"ply": ply, "json": b"{}"}) for n in range(2)]
    with pytest.raises(ShardError, match="Mesh"):
        tar_shard.validate_items(items)
    path = tmp_path / "ply.tar"
    with path.open("wb") as fh:
        tar_shard.write_shard(items, fh, allow_mesh=True)  # the ply config's own shards
    builder = datasets.load_dataset_builder("webdataset", data_files={"train": str(path)},
                                            cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    assert type(builder.info.features["ply"]).__name__ == "Mesh"


@pytest.mark.parametrize(
    ("members_list", "match"),
    [
        ([], "at least one"),
        ([{"spz": b"1", "json": b"{}"}, {"spz": b"1"}], "has members"),
        ([{"spz": b"1"}, {"spz": b"1", "webp": b""}], "has members"),
        ([{"SPZ": b"1"}], "lowercase"),
        ([{".spz": b"1"}], "lowercase"),
        ([{"small.ply": b"1"}], "Mesh"),
        ([{"stl": b"1"}], "Mesh"),
        ([{}], "no members"),
    ],
)
def test_bad_member_sets_are_refused(members_list: list[dict[str, bytes]], match: str) -> None:
    items = [ShardItem(encode_key(f"i{n}"), m) for n, m in enumerate(members_list)]
    with pytest.raises(ShardError, match=match):
        tar_shard.write_shard(items, io.BytesIO())


@pytest.mark.parametrize("bad_key", ["a.b", "a/b", "__x", "a_61", ""])
def test_bad_or_repeated_keys_are_refused(bad_key: str) -> None:
    with pytest.raises(ShardError, match="not a shard key"):
        tar_shard.write_shard([ShardItem(bad_key, {"spz": b"1"})], io.BytesIO())
    with pytest.raises(ShardError, match="twice"):
        tar_shard.write_shard([ShardItem("k", {"spz": b"1"}), ShardItem("k", {"spz": b"2"})], io.BytesIO())


@pytest.mark.parametrize("key_len", [1, 95, 96, 97, 130])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 10_239, 10_240])
def test_tar_size_matches_written_bytes(key_len: int, size: int) -> None:
    """Around the ustar name limit (100 chars incl. '.spz') and the block/record boundaries."""
    key = "k" * key_len
    out = io.BytesIO()
    res = tar_shard.write_shard([ShardItem(key, {"spz": b"\x01" * size})], out)
    assert len(out.getvalue()) == res.size == tar_shard.tar_size([(f"{key}.spz", size)])
    # Below the record rounding: the header bytes before the data, plus the data padded to a block.
    padded = -(-size // 512) * 512
    assert tar_shard.member_tar_bytes(f"{key}.spz", size) == res.members[0].offset + padded
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getmembers()[0].offset_data == res.members[0].offset


def test_verify_shard_reports_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "s.tar"
    res = _write(_items(), path)
    with path.open("rb") as fh:
        assert tar_shard.verify_shard(fh, res.members) == []
    spz = res.members_of(encode_key("zz"))["spz"]
    data = bytearray(path.read_bytes())
    data[spz.offset] ^= 0x01
    path.write_bytes(bytes(data))
    ghost = tar_shard.MemberRecord("ghost.spz", "ghost", "spz", 0, 1, "0" * 64)
    index = [m for m in res.members if m.name != f"{encode_key('a_b.c')}.json"] + [ghost]
    with path.open("rb") as fh:
        problems = tar_shard.verify_shard(fh, index)
    assert problems == [
        f"{encode_key('a_b.c')}.json: in the shard but not in the index",
        f"{spz.name}: sha256 {hashlib.sha256(bytes(data[spz.offset:spz.offset + spz.size])).hexdigest()[:12]}…, "
        f"the index says {spz.sha256[:12]}…",
        "ghost.spz: in the index but not in the shard",
    ]
    path.write_bytes(bytes(data[: spz.offset + 3]))
    with path.open("rb") as fh:
        problems = tar_shard.verify_shard(fh, res.members)
    assert problems[0].startswith("unreadable after") and problems[-1].endswith("in the index but not in the shard")
