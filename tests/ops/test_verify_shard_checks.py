"""verify's checks of the sharded layout (ledger/verify + ledger/shard_checks) on real tars."""

from __future__ import annotations

import json
from pathlib import Path

from sharp_dataset_pipeline.ledger.verify import StoreView, find_problems
from sharp_dataset_pipeline.publish import parquet_index, tar_shard
from sharp_dataset_pipeline.publish.shard_keys import encode_key
from sharp_dataset_pipeline.records import IndexRow

SHARD = "data/shards/ab/abcdef-0.tar"
FIELDS = ("jpg", "json", "spz", "webp")


def _content(item_id: str, field: str) -> bytes:
    return f"{item_id}/{field};".encode() * 40


def _repo(root: Path, ids: list[str]) -> tuple[StoreView, list[IndexRow]]:
    dst = root / SHARD
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("wb") as out:
        result = tar_shard.write_shard([tar_shard.ShardItem(encode_key(i), {f: _content(i, f) for f in FIELDS})
                                        for i in ids], out)
    rows = [IndexRow(id=i, source="folder", unit="u", shard_key=encode_key(i), shard_path=SHARD,
                     members=parquet_index.members_json(
                         parquet_index.shard_members(SHARD, result.members_of(encode_key(i)).values())))
            for i in ids]
    index = "".join(json.dumps({"id": r.id, "source": r.source, "unit": r.unit, "shard_key": r.shard_key,
                                "shard_path": r.shard_path, "members": r.members}) + "\n" for r in rows)
    view = StoreView("test", {"data/train.jsonl": index.encode()}, {SHARD: dst.stat().st_size},
                     parquet_ids=set(ids))
    return view, rows


def _opener(root: Path):
    return lambda path: (root / path).open("rb")


def test_a_consistent_sharded_repo_has_no_problems(tmp_path: Path) -> None:
    view, _ = _repo(tmp_path, ["a1", "b2", "c3"])
    report = find_problems(view, 0.0, opener=_opener(tmp_path))
    assert report.ok and report.rows == 3 and report.files == 1


def test_deep_names_the_corrupted_member(tmp_path: Path) -> None:
    view, rows = _repo(tmp_path, ["a1", "b2", "c3"])
    spz = next(m for m in parquet_index.row_members(rows[1]) if m.field == "spz")
    shard = tmp_path / SHARD
    data = bytearray(shard.read_bytes())
    data[spz.offset + 5] ^= 0x20
    shard.write_bytes(bytes(data))
    assert find_problems(view, 0.0).ok  # shallow: same size, nothing to see
    report = find_problems(view, 0.0, opener=_opener(tmp_path))
    assert [(p.kind, p.subject) for p in report.problems] == [("member_mismatch", "b2")]
    assert f"{encode_key('b2')}.spz" in report.problems[0].detail and not report.problems[0].fixable


def test_orphan_shard_missing_shard_and_parquet_ids(tmp_path: Path) -> None:
    view, _ = _repo(tmp_path, ["a1", "b2"])
    view.listing["data/shards/cd/cdef01-0.tar"] = 10240
    view.parquet_ids = {"a1", "zz"}
    kinds = {(p.kind, p.subject) for p in find_problems(view, 0.0).problems}
    assert kinds == {("orphan_file", "data/shards/cd/cdef01-0.tar"), ("index_mismatch", "b2"),
                     ("index_mismatch", "zz")}
    del view.listing[SHARD]
    missing = [p for p in find_problems(view, 0.0).problems if p.kind == "missing_member"]
    assert {p.subject for p in missing} == {"a1", "b2"} and len(missing) == 2 * len(FIELDS)
