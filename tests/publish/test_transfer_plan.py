"""Steps of migrate --to shards and push: bounded, whole shard groups, resumable from what has landed."""

from __future__ import annotations

import json

import pytest

from sharp_dataset_pipeline.publish.parquet_index import ShardMember, members_json
from sharp_dataset_pipeline.publish.transfer_plan import (
    migration_steps,
    push_steps,
    row_bytes,
    row_ref,
    shard_groups,
)
from sharp_dataset_pipeline.records import IndexRow


def files_row(i: int, size: int = 100) -> IndexRow:
    extra = json.dumps([{"kind": "preview", "path": f"u/{i}/{i}.preview.webp", "size": 10, "sha256": ""}])
    return IndexRow(id=f"id{i:03d}", source="s", unit="u", image_path=f"u/{i}/{i}.jpg", image_size=size,
                    ply_path=f"u/{i}/{i}.ply", ply_size=size, extra_files=extra)


def shard_row(i: int, shard: str, ply: str = "", size: int = 50) -> IndexRow:
    members = [ShardMember(shard, f"k{i}.spz", "spz", 0, size, "")]
    if ply:
        members.append(ShardMember(ply, f"k{i}.ply", "ply", 0, size, ""))
    return IndexRow(id=f"id{i:03d}", source="s", unit="u", shard_key=f"k{i}", shard_path=shard,
                    ply_shard_path=ply, members=members_json(members))


def test_migration_steps_skip_migrated_rows_and_stay_bounded() -> None:
    rows = [files_row(i) for i in range(7)] + [shard_row(7, "data/shards/aa/x-000.tar")]
    steps = migration_steps(reversed(rows), max_items=3)
    assert [[r.id for r in s] for s in steps] == [["id000", "id001", "id002"], ["id003", "id004", "id005"], ["id006"]]
    assert row_bytes(rows[0]) == 210
    # by bytes: 210 each, 500 per step -> two per step; an item bigger than the bound goes alone
    assert [len(s) for s in migration_steps(rows[:5], max_bytes=500)] == [2, 2, 1]
    assert [len(s) for s in migration_steps([files_row(0, 10**6), files_row(1)], max_bytes=500)] == [1, 1]
    # resumed after the first step landed (its rows now in shards): only the rest is planned
    landed = [shard_row(i, "data/shards/aa/y-000.tar") for i in range(3)] + rows[3:7]
    assert [r.id for s in migration_steps(landed, max_items=3) for r in s] == ["id003", "id004", "id005", "id006"]
    with pytest.raises(ValueError):
        migration_steps(rows, max_items=0)


def test_shard_groups_join_rows_that_share_a_shard_or_a_ply_shard() -> None:
    a, b, p = "data/shards/aa/a-000.tar", "data/shards/bb/b-000.tar", "data/ply/aa/a-000.tar"
    rows = [shard_row(0, a, p), shard_row(1, b, p), shard_row(2, "data/shards/cc/c-000.tar"), files_row(3)]
    groups = shard_groups([row_ref(r) for r in rows])
    assert [(paths, [r.id for r in members]) for paths, members in groups] == [
        ((p, a, b), ["id000", "id001"]), (("data/shards/cc/c-000.tar",), ["id002"])]


def test_push_steps_carry_whole_groups_and_resume_from_the_target() -> None:
    rows = [row_ref(shard_row(i, f"data/shards/{i:02d}/s{i}-000.tar")) for i in range(5)]
    rows.append(row_ref(shard_row(5, "data/shards/04/s4-000.tar")))  # shares id004's shard
    steps = push_steps(rows, set(), max_files=2)
    assert [s.shards for s in steps] == [
        ("data/shards/00/s0-000.tar", "data/shards/01/s1-000.tar"),
        ("data/shards/02/s2-000.tar", "data/shards/03/s3-000.tar"), ("data/shards/04/s4-000.tar",)]
    assert steps[2].item_ids == ["id004", "id005"]
    # after the first step landed, a rerun plans the rest; an id the target published itself is left out
    again = push_steps(rows, {"id000", "id001", "id005"}, max_files=2)
    assert [r for s in again for r in s.item_ids] == ["id002", "id003", "id004"]
    assert all(s.shards for s in again) and len(again) == 2
    assert push_steps(rows, {r.id for r in rows}) == []
    # by bytes: 50 per group, 120 per step
    assert [len(s.shards) for s in push_steps(rows[:4], set(), max_bytes=120)] == [2, 2]
