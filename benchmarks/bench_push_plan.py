"""Memory of planning a ``push`` from a local sharded store of 200,000 rows: rows kept as refs vs full rows.

The ledger is written directly (rows as the sharded layout's publish step writes them: Unsplash
attribution, four members per item, 128 items per tar). Measured in the same run, with ``tracemalloc``:
- candidate: ``read_local_dataset`` (each row kept as a ``RowRef``) and ``plan_push`` on it;
- baseline: what push held before, every row read into a full ``IndexRow`` (and nothing planned).
Printed: the memory each keeps per row once read and its peak (traced), then the seconds each takes
(untraced, best of 3).

Run: ``python benchmarks/bench_push_plan.py [--quick]`` (quick: 20,000 rows).
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from harness import machine_line, parse_args
from sharp_dataset_pipeline.ops.push import PushOptions, plan_push
from sharp_dataset_pipeline.publish import layout
from sharp_dataset_pipeline.publish.index import row_from_json, row_to_json
from sharp_dataset_pipeline.publish.layout_choice import MARKER_PATH, SHARDS, marker_bytes
from sharp_dataset_pipeline.publish.parquet_index import ShardMember, members_json
from sharp_dataset_pipeline.records import IndexRow
from sharp_dataset_pipeline.stores import local_schema as sql
from sharp_dataset_pipeline.stores.local_export import read_local_dataset

PER_TAR = 128
PER_UNIT = 300
NOW = 1_800_000_000.0


def _row(i: int) -> IndexRow:
    item, tar = f"{i:011d}x", f"data/shards/{i // PER_TAR % 256:02x}/{i // PER_TAR:020x}-000.tar"
    members = [ShardMember(tar, f"{item}.{f}", f, 512 + k * 4096, 1000 + k, f"{i:064x}")
               for k, f in enumerate(("jpg", "json", "spz", "webp"))]
    first = i // PER_UNIT * PER_UNIT
    return IndexRow(
        id=item, source="unsplash", unit=f"unsplash/list/{first:06d}-{first + PER_UNIT - 1:06d}",
        image_size=740_000, image_sha256=f"{i:064x}", width=1536, height=1024, focal_px=1280.5,
        focal_source="exif_35mm", num_gaussians=1_179_648, predictor="sharp", model_version="sharp-2025-10",
        source_url=f"https://images.unsplash.com/photo-{i}?ixid=abc&w=1536", page_url=f"https://unsplash.com/photos/{item}",
        unsplash_url=f"https://unsplash.com/photos/{item}", user_name="A Photographer", user_username="aphotographer",
        user_url="https://unsplash.com/@aphotographer", license="Unsplash License",
        description="A mountain lake at dawn, mist over the water", alt_description="a lake surrounded by trees",
        tags='["lake", "mountain", "dawn", "mist"]', topics='["nature"]', color="#a0b0c0",
        blur_hash="LKO2?U%2Tw=w]~RBVZRi};RPxuwH", created_at="2024-05-01T06:00:00Z",
        processed_at="2026-12-01T00:00:00Z", client_id="bench-client", shard_key=item, shard_path=tar,
        members=members_json(members))


def build_store(root: Path, rows: int) -> None:
    (root / layout.COORD_DIR).mkdir(parents=True)
    (root / MARKER_PATH).parent.mkdir(parents=True, exist_ok=True)
    (root / MARKER_PATH).write_bytes(marker_bytes(SHARDS))
    conn = sql.connect(root / layout.ledger_path())
    sql.ensure_schema(conn)
    with sql.write_tx(conn):
        for start in range(0, rows, PER_TAR):
            batch = [_row(i) for i in range(start, min(rows, start + PER_TAR))]
            t = NOW + start
            entries = [(r.id, r.unit, r.source, row_to_json(r), f"step-{start}", t, r.client_id, r.predictor,
                        r.model_version) for r in batch]
            sql.insert_items(conn, entries, f"step-{start}", "bench-client", t)
    conn.close()


def measure(fn: Callable[[], object]) -> tuple[object, int, int, float]:
    """``fn()``'s result, the memory it still holds, the peak while it ran, and its seconds."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, held, peak, seconds


def measure_time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def full_rows(root: Path) -> tuple[IndexRow, ...]:
    conn = sql.connect(root / layout.ledger_path())
    try:
        return tuple(row_from_json(line) for (line,) in conn.execute("SELECT row FROM items ORDER BY published_at, id"))
    finally:
        conn.close()


def main() -> int:
    args = parse_args(__doc__ or "")
    print(machine_line())
    rows = 20_000 if args.quick else 200_000
    with tempfile.TemporaryDirectory(prefix="bench_push_plan_") as tmp:
        root = Path(tmp) / "store"
        build_store(root, rows)

        def candidate() -> object:
            dataset = read_local_dataset(root)
            return dataset, plan_push(dataset.refs, dataset.units_done, set(), set(), PushOptions())

        (dataset, commits), held, peak, seconds = measure(candidate)  # type: ignore[misc]
        baseline, b_held, b_peak, b_seconds = measure(lambda: full_rows(root))
        assert len(dataset.refs) == len(baseline) == rows  # type: ignore[arg-type]
        assert sum(len(c.rows) for c in commits) == rows
        print(f"{rows} rows, {len(commits)} commits planned ({PER_TAR} items per tar)")
        print(f"  refs + plan (candidate): {held / rows:,.0f} B/row held, peak {peak / 1e6:,.1f} MB, {seconds:.2f} s")
        print(f"  full rows (baseline):    {b_held / rows:,.0f} B/row held, peak {b_peak / 1e6:,.1f} MB, "
              f"{b_seconds:.2f} s, nothing planned")
        fast = min(measure_time(candidate) for _ in range(3))
        slow = min(measure_time(lambda: full_rows(root)) for _ in range(3))
        print(f"  untraced, best of 3: refs + plan {fast:.2f} s, full rows {slow:.2f} s ({fast / slow:.2f}x)")
        print(f"  held per row: {b_held / held:.1f}x less; at 1,000,000 rows: {held / rows * 1e6 / 1e9:.2f} GB vs "
              f"{b_held / rows * 1e6 / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
