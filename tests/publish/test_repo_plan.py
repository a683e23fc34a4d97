"""The planners on a scaled-down million-item plan: files per item and entries per folder within the bounds
that give <= 30,000 files and <= 1,000 entries per folder at 1,000,000 items."""

from __future__ import annotations

from sharp_dataset_pipeline.publish import repo_plan
from sharp_dataset_pipeline.publish.shard_layout import MAX_FOLDER_ENTRIES

ITEMS = 20_000


def test_scaled_plan_stays_within_the_bounds() -> None:
    ids = repo_plan.unsplash_like_ids(ITEMS, seed=1)
    assert len(set(ids)) == ITEMS
    sharded = repo_plan.plan_sharded(ids, batch_items=64, clients=8)
    assert sharded.files <= 30_000 * ITEMS // 1_000_000  # 600: the 1M bound, per item
    assert sharded.max_folder_entries <= MAX_FOLDER_ENTRIES
    assert ITEMS // 64 <= sharded.tars <= ITEMS // 64 * 1.1  # ~1 GB tars: about one per 64-item batch
    assert sharded.index_files < 100  # compaction ran: not one index file per batch
    per_item = repo_plan.plan_per_item(ids)
    assert per_item.files >= 3 * ITEMS  # the baseline: one file per item and format
    assert per_item.max_folder_entries > MAX_FOLDER_ENTRIES  # its <subdir> holds up to 4,096 prefixes


def test_ply_config_has_its_own_tars() -> None:
    ids = repo_plan.unsplash_like_ids(640, seed=2)
    stats = repo_plan.plan_sharded(ids, batch_items=64, with_ply=True)
    # 66 MB PLYs: 15 fit in 1 GB, so a 64-item batch needs 5 PLY tars next to its one splat tar.
    assert stats.ply_tars == 50 and stats.tars == 10
