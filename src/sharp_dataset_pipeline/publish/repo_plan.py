"""What a repository looks like after N items, by the planners alone (no bytes): file count and the fullest
folder, for the sharded layout and, as a baseline, the per-item layout. Pure; used by
``benchmarks/bench_shard_plan.py`` and the layout tests.

Counted: every data file and index file, the dataset card and ``.gitattributes``. Not counted: the
``.coord/`` coordination files (the ledger decides those, the same for both layouts).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

from . import layout
from .parquet_index import DEFAULT_PART_BYTES, IndexShardInfo, plan_compaction
from .shard_layout import (
    BATCH_DIGITS,
    DEFAULT_MAX_SHARD_BYTES,
    PENDING_INDEX_DIR,
    PlannedItem,
    folder_entries,
    index_shard_path,
    plan_batch,
)

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
FIXED_FILES = ("README.md", ".gitattributes")


@dataclass(frozen=True)
class ItemSizes:
    """Mean member sizes of one item (bytes); each item varies by up to ``spread`` either way."""

    photo: int = 3_000_000
    spz: int = 12_000_000
    json: int = 6_000
    webp: int = 40_000
    ply: int = 66_060_000
    index_row: int = 46_000  # the preview plus the typed metadata, in the Parquet index
    spread: float = 0.3


@dataclass(frozen=True)
class RepoStats:
    """The repository a plan ends with."""

    items: int
    files: int
    tars: int
    ply_tars: int
    index_files: int
    commits: int
    max_folder: str
    max_folder_entries: int


def unsplash_like_ids(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct 11-character ids drawn like Unsplash's (letters, digits, ``_`` and ``-``)."""
    rng = random.Random(seed)
    ids: set[str] = set()
    while len(ids) < n:
        ids.add("".join(rng.choice(_ID_CHARS) for _ in range(11)))
    out = sorted(ids)
    rng.shuffle(out)  # arrival order is not id order
    return out


def _vary(rng: random.Random, mean: int, spread: float) -> int:
    return max(1, int(mean * (1.0 + rng.uniform(-spread, spread))))


def plan_sharded(ids: Sequence[str], *, batch_items: int, clients: int = 1, sizes: ItemSizes = ItemSizes(),
                 with_ply: bool = False, compact_every: int = 256, seed: int = 0,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                 part_bytes: int = DEFAULT_PART_BYTES) -> RepoStats:
    """Publish ``ids`` in batches of ``batch_items`` (clients taking turns), compacting the index every
    ``compact_every`` pending shards, and count what the repository holds at the end."""
    rng = random.Random(seed)
    data: list[str] = []
    index: dict[str, IndexShardInfo] = {}
    commits = 0
    tars = ply_tars = 0
    for start in range(0, len(ids), batch_items):
        chunk = ids[start:start + batch_items]
        items = [PlannedItem(i, {"jpg": _vary(rng, sizes.photo, sizes.spread),
                                 "spz": _vary(rng, sizes.spz, sizes.spread),
                                 "json": sizes.json, "webp": sizes.webp}) for i in chunk]
        ply = [PlannedItem(i, {"ply": sizes.ply, "json": sizes.json}) for i in chunk] if with_ply else []
        plan = plan_batch(f"client-{(start // batch_items) % clients}", items, ply_items=ply,
                          max_shard_bytes=max_shard_bytes)
        data += [s.path for s in plan.shards + plan.ply_shards]
        tars += len(plan.shards)
        ply_tars += len(plan.ply_shards)
        commits += 1 + _add_index(index, IndexShardInfo(plan.index_path, len(chunk), len(chunk) * sizes.index_row),
                                  compact_every, part_bytes)
    return _stats(len(ids), data, list(index), tars, ply_tars, commits)


def _add_index(index: dict[str, IndexShardInfo], shard: IndexShardInfo, compact_every: int, part_bytes: int) -> int:
    """Add one pending index shard; compact once ``compact_every`` are pending. Returns commits spent."""
    index[shard.path] = shard
    pending = sum(1 for p in index if p.startswith(PENDING_INDEX_DIR + "/"))
    if not compact_every or pending < compact_every:
        return 0
    steps = plan_compaction(list(index.values()), target_bytes=part_bytes)
    for step in steps:
        for path in step.inputs:
            del index[path]
        index[step.output] = IndexShardInfo(step.output, step.rows, step.size)
    return 1 if steps else 0  # one compare-and-swap commit for all steps


def _stats(items: int, data: list[str], index: list[str], tars: int, ply_tars: int, commits: int) -> RepoStats:
    paths = data + index + list(FIXED_FILES)
    entries = folder_entries(paths)
    folder, most = max(entries.items(), key=lambda kv: kv[1])
    return RepoStats(items, len(paths), tars, ply_tars, len(index), commits, folder or "/", most)


def _per_item_paths(ids: Sequence[str], exts: Sequence[str], subdir: str) -> Iterator[str]:
    for item_id in ids:
        for ext in exts:
            yield layout.item_path(subdir, item_id, ext, fanout=True)


def plan_per_item(ids: Sequence[str], *, batch_items: int = 32, exts: Sequence[str] = ("jpg", "spz", "preview.webp"),
                  subdir: str = "unsplash", compact_every: int = 256, sizes: ItemSizes = ItemSizes()) -> RepoStats:
    """The per-item layout (``<subdir>/<id[:2]>/<id>/<id>.<ext>``) for the same items and formats: one file
    per item and format, ~32 items per commit (the Hub's ~100 files per commit), the same index."""
    index: dict[str, IndexShardInfo] = {}
    commits = 0
    for n, start in enumerate(range(0, len(ids), batch_items)):
        rows = len(ids[start:start + batch_items])
        path = index_shard_path(f"{n:0{BATCH_DIGITS}x}")
        commits += 1 + _add_index(index, IndexShardInfo(path, rows, rows * sizes.index_row), compact_every,
                                  DEFAULT_PART_BYTES)
    paths = list(index) + list(FIXED_FILES)
    entries = folder_entries(chain(_per_item_paths(ids, exts, subdir), paths))
    folder, most = max(entries.items(), key=lambda kv: kv[1])
    return RepoStats(len(ids), len(ids) * len(exts) + len(paths), 0, 0, len(index), commits, folder or "/", most)
