"""``status`` on a local store with 100,000 index rows, against a naive status, in the same run.

The store is laid out exactly as the local store's publish step leaves it (ledger rows, one
index shard per publish step of 32 items, two files per item), written directly for speed.
- candidate: ``ops.status.dataset_status`` (ledger aggregates only);
- baseline: a naive status that parses every index row and lists every file of the store.
Then two sweeps show what the candidate's cost follows: 10x more rows with the same clients and
leases, and 100x more clients and leases with the same rows.

Run: ``python benchmarks/bench_status.py [--quick]`` (quick: 20,000 rows).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from harness import compare, machine_line, parse_args, repeats, time_call
from sharp_dataset_pipeline.ops.status import dataset_status
from sharp_dataset_pipeline.publish import layout
from sharp_dataset_pipeline.publish.index import row_from_json, row_to_json
from sharp_dataset_pipeline.records import IndexRow, Lease
from sharp_dataset_pipeline.stores import local_schema as sql
from sharp_dataset_pipeline.stores.local import LocalStore

INDEX = "data/train.jsonl"
BATCH = 32
RANGE = 300
NOW = 1_800_000_000.0


def build_store(root: Path, rows: int, clients: int, leases_per_client: int, with_files: bool,
                batch: int = BATCH, range_size: int = RANGE) -> None:
    """A store with ``rows`` published items spread over ``clients``, plus live and expired leases.

    ``batch`` items per publish step (one index shard each), ``range_size`` items per unit.
    """
    (root / "data").mkdir(parents=True)
    (root / layout.COORD_DIR).mkdir()
    conn = sql.connect(root / layout.ledger_path())
    sql.ensure_schema(conn)
    with sql.write_tx(conn):
        for start in range(0, rows, batch):
            client = f"client{(start // batch) % clients:03d}"
            t = NOW - 2 * 86400 + start * (2 * 86400 / rows)
            shard = os.path.basename(layout.shard_path(INDEX, client, t, f"{start:012x}"))
            entries = []
            for i in range(start, min(rows, start + batch)):
                item = f"{i:016x}"
                first = i // range_size * range_size
                unit = f"folder/bench/{first:06d}-{first + range_size - 1:06d}"
                row = IndexRow(id=item, source="folder", unit=unit, image_path=f"folder/{item}/{item}.jpg",
                               image_size=3, ply_path=f"folder/{item}/{item}.ply", ply_size=4, client_id=client,
                               processed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)))
                entries.append((item, unit, "folder", row_to_json(row), shard, t, client, row.predictor,
                                row.model_version))
            sql.insert_items(conn, entries, shard, client, t)
            (root / "data" / shard).write_text("".join(e[3] + "\n" for e in entries))
        units = sorted({f"folder/bench/{u:06d}-{u + range_size - 1:06d}" for u in range(0, rows, range_size)})
        for n, unit in enumerate(units):
            sql.mark_units_done(conn, [unit], f"client{n % clients:03d}", NOW - 86400 + n)
        for c in range(clients):
            for k in range(leases_per_client):
                expires = NOW + 600 if k % 2 == 0 else NOW - 600
                sql.put_lease(conn, Lease(f"folder/live/{c:03d}-{k:04d}", f"client{c:03d}", "n", NOW - 900, expires))
    conn.close()
    if with_files:
        for i in range(rows):
            folder = root / "folder" / f"{i:016x}"
            folder.mkdir(parents=True)
            (folder / f"{i:016x}.jpg").write_bytes(b"jpg")
            (folder / f"{i:016x}.ply").write_bytes(b"ply\n")


def naive_status(root: Path, now: float) -> dict:
    """What a status without ledger aggregates does: read every row, list every file."""
    per_client: Counter[str] = Counter()
    last_hour: Counter[str] = Counter()
    ids = set()
    for shard in sorted((root / "data").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            row = row_from_json(line)
            ids.add(row.id)
            per_client[row.client_id] += 1
            t = datetime.fromisoformat(row.processed_at.replace("Z", "+00:00")).timestamp()
            if t >= now - 3600:
                last_hour[row.client_id] += 1
    files = 0
    size = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != layout.COORD_DIR]
        for name in names:
            files += 1
            size += os.stat(os.path.join(folder, name)).st_size
    conn = sql.connect(root / layout.ledger_path())  # leases: the same rows status reads
    leases = [Lease(*r) for r in conn.execute("SELECT unit, owner, nonce, acquired_at, expires_at FROM leases")]
    conn.close()
    return {"published": len(ids), "clients": dict(per_client), "last_hour": dict(last_hour), "files": files,
            "bytes": size, "leases": len(leases)}


def status_once(root: Path) -> None:
    dataset_status(LocalStore(root).admin(), NOW)


def main() -> int:
    args = parse_args(__doc__ or "")
    print(machine_line())
    rows = 20_000 if args.quick else 100_000
    n = repeats(args, 5, 2)
    with tempfile.TemporaryDirectory(prefix="bench_status_") as tmp:
        big = Path(tmp) / "big"
        start = time.perf_counter()
        build_store(big, rows, clients=4, leases_per_client=10, with_files=True)
        print(f"built a store with {rows} rows, {2 * rows} item files, 4 clients in "
              f"{time.perf_counter() - start:.1f} s")
        report = dataset_status(LocalStore(big).admin(), NOW)
        naive = naive_status(big, NOW)
        assert report.published == naive["published"] == rows, (report.published, naive["published"])
        candidate = time_call(f"status ({rows} rows)", lambda: status_once(big), n)
        baseline = time_call(f"naive status ({rows} rows)", lambda: naive_status(big, NOW), max(1, n // 2))
        ratio = compare(candidate, baseline)

        print("\nwhat status's cost follows (ledger only, no item files needed):")
        small = rows // 10
        cases = (
            ("base", small, 4, 10, BATCH, RANGE),
            ("10x rows, same publish steps and units", rows, 4, 10, BATCH * 10, RANGE * 10),
            ("10x rows, 10x publish steps and units", rows, 4, 10, BATCH, RANGE),
            ("100x clients and leases", small, 400, 10, BATCH, RANGE),
        )
        sweep = {}
        for k, (label, r, c, leases, batch, rng) in enumerate(cases):
            root = Path(tmp) / f"sweep{k}"
            build_store(root, r, clients=c, leases_per_client=leases, with_files=False, batch=batch, range_size=rng)
            sweep[label] = time_call(f"status, {label}: {r} rows, {-(-r // batch)} publish steps, "
                                     f"{-(-r // rng)} units, {c} clients, {c * leases} leases",
                                     lambda root=root: status_once(root), n)
        base = sweep["base"].min  # minimums: the least disturbed by other work on the machine
        for label in list(sweep)[1:]:
            print(f"  {label}: {sweep[label].min / base:.2f}x the base time (minimums)")
    ok = ratio >= 10
    print(f"{'PASS' if ok else 'FAIL'}: status is {ratio:.0f}x faster than the naive status (needs >= 10x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
