"""A 1,000,000-item repository by the planners alone (no bytes): files and the fullest folder.

Sharded layout (``publish/shard_layout.py``, ``publish/parquet_index.py``): batches of ``--batch`` items
(default 64, the smallest batch ``batch_sizing`` makes) from ``--clients`` clients taking turns, each
batch split into ~1 GB WebDataset tars, one index shard per batch, compaction every 256 pending index
shards into ~500 MB Parquet parts. Baseline in the same run: the per-item layout
(``<subdir>/<id[:2]>/<id>/<id>.<ext>``) for the same items and formats (photo, ``.spz``, preview).
Item sizes: photo 3 MB, ``.spz`` 12 MB (each ±30 %), JSON 6 kB, preview 40 kB (README's formats table:
SHARP's ``.spz`` is 6.6–16.8 MB). Targets (issue 14): ≤ 30,000 files, ≤ 1,000 entries in any folder.
``.coord/`` files are not counted (the ledger's, the same for both layouts).

Run: ``python benchmarks/bench_shard_plan.py [--items N] [--batch B] [--clients C] [--ply]``.
"""

from __future__ import annotations

import argparse
import time

from harness import machine_line
from sharp_dataset_pipeline.publish.repo_plan import RepoStats, plan_per_item, plan_sharded, unsplash_like_ids


def _line(name: str, s: RepoStats) -> str:
    return (f"  | {name} | {s.files:,} | {s.tars:,} + {s.ply_tars:,} ply | {s.index_files:,} | {s.commits:,} | "
            f"{s.max_folder_entries:,} (`{s.max_folder}`) |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--ply", action="store_true", help="also plan the optional full-PLY shards")
    args = ap.parse_args()
    print(machine_line())
    t0 = time.perf_counter()
    ids = unsplash_like_ids(args.items)
    t1 = time.perf_counter()
    sharded = plan_sharded(ids, batch_items=args.batch, clients=args.clients)
    t2 = time.perf_counter()
    per_item = plan_per_item(ids)
    t3 = time.perf_counter()
    print(f"{args.items:,} items, batches of {args.batch}, {args.clients} clients "
          f"(ids {t1 - t0:.1f} s, sharded plan {t2 - t1:.1f} s, per-item plan {t3 - t2:.1f} s)")
    print("  | layout | files in the repo | tars | index files | commits | most entries in one folder |")
    print("  |---|---|---|---|---|---|")
    print(_line("sharded", sharded))
    if args.ply:
        print(_line("sharded + ply config", plan_sharded(ids, batch_items=args.batch, clients=args.clients,
                                                         with_ply=True)))
    print(_line("per-item (baseline)", per_item))
    ok = sharded.files <= 30_000 and sharded.max_folder_entries <= 1000
    print(f"  sharded: {sharded.files / per_item.files:.4f} of the per-item layout's files; "
          f"targets <= 30,000 files and <= 1,000 entries per folder: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
