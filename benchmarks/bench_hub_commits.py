"""Hub store cost per published item, measured on the loopback Hub emulator.

Every commit the repo receives is counted (the dataset card, unit leases, publishes, lease
renewals, done markers, compactions), and every request in the Hub's API bucket (repo info, tree
pages, preupload, commit, paths-info, refs) and resolver bucket (downloads) as the emulator saw
them. Clients follow the pipeline's call pattern (``pipeline/intake.py``, ``pipeline/publisher.py``):
``unit_status`` + ``acquire`` per unit, ``item_states`` per 64 items, one ``publish`` per batch with
the unit's lease renewal riding along, the last batch of a unit marking it done. A shared fake
clock advances one second per item (the GPU rate), so lease renewals and state refreshes happen as
in a real run without waiting for them. Several clients are interleaved step by step on one repo.

Targets (issue 4): commits per published item <= 1/16 at the default batch size, counting every
commit, and API calls per published item <= 0.25.

    python benchmarks/bench_hub_commits.py [--quick] [--items 1920] [--batch-size 32] [--range-size 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from emulators.hub import HubEmulator, HubFaults, ManualClock, make_items  # noqa: E402
from harness import machine_line  # noqa: E402
from sharp_dataset_pipeline.records import Batch, Unit  # noqa: E402
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore  # noqa: E402

REPO = "bench/splats"
TTL = 1800.0


def _client(store: HubStore, cid: str, units: list[Unit], batch_size: int, clock: ManualClock,
            step_s: float, work: Path) -> Iterator[None]:
    """One client's calls, yielding after each so that several clients interleave."""
    for unit in units:
        if store.unit_status([unit.key])[unit.key].done:
            yield
            continue
        if store.acquire(unit, cid, TTL) is None:
            yield
            continue
        yield
        ids = [f"{unit.key.replace('/', '_')}_{k:04d}" for k in range(unit.start, unit.stop)]
        pending: list[str] = []
        for c in range(0, len(ids), 64):
            chunk = ids[c:c + 64]
            states = store.item_states(chunk)
            yield
            for item_id in chunk:
                if item_id in states and states[item_id].published:
                    continue
                clock.advance(step_s)  # the GPU's time for this item
                pending.append(item_id)
                if len(pending) == batch_size:
                    store.publish(Batch(cid, items=make_items(work, pending, unit=unit.key),
                                        renew_units=[unit.key], lease_ttl_s=TTL))
                    pending = []
                    yield
        store.publish(Batch(cid, items=make_items(work, pending, unit=unit.key), units_done=[unit.key],
                            lease_ttl_s=TTL))
        yield


def measure(items: int, batch_size: int, range_size: int, clients: int, faults: HubFaults | None,
            work: Path) -> dict[str, float]:
    clock = ManualClock()
    units = [Unit(f"bench/{s:06d}-{min(s + range_size, items) - 1:06d}", s, min(s + range_size, items))
             for s in range(0, items, range_size)]
    with HubEmulator(clock=clock) as hub:
        stores = [HubStore(HubOptions(REPO, endpoint=hub.url, token="hf_benchmark", client_id=f"c{i}",
                                      cache_dir=work / f"cache{i}"), clock=clock, sleep=clock.sleep)
                  for i in range(clients)]
        for store in stores:
            store.open()
        if faults is not None:
            hub.set_faults(faults)
        runners = [_client(s, f"c{i}", units, batch_size, clock, 1.0 / clients, work / f"items{i}")
                   for i, s in enumerate(stores)]
        while runners:
            for runner in list(runners):
                try:
                    next(runner)
                except StopIteration:
                    runners.remove(runner)
        for store in stores:
            store.close()
        published = sum(s.budget_report()["published_items"] for s in stores)
        commits = hub.stats["commits"]
        return {
            "published": published,
            "commits": commits,
            "commits_per_item": commits / published,
            "api_per_item": hub.stats["api"] / published,
            "resolver_per_item": hub.stats["resolver"] / published,
            "conflicts_412": hub.stats["status_412"],
            "busy_409": hub.stats["status_409"],
            "hours": (clock() - 1_800_000_000.0) / 3600,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--items", type=int, default=1920)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--range-size", type=int, default=300)
    args = parser.parse_args(argv)
    items = 640 if args.quick else args.items
    print(machine_line())
    print(f"{items} items, batch size {args.batch_size}, range size {args.range_size}")
    header = (f"{'setup':<28}{'items':>6}{'commits':>8}{'commits/item':>14}{'api/item':>10}"
              f"{'resolver/item':>15}{'412s':>6}{'409s':>6}")
    print(header)
    ok = True
    setups = [("1 client, no faults", 1, None), ("4 clients, no faults", 4, None),
              ("4 clients, faults on", 4, HubFaults(seed=1, random_409_rate=0.05, error_after_commit_rate=0.03,
                                                    drop_after_commit_rate=0.03, lag_reads=1))]
    with tempfile.TemporaryDirectory() as tmp:
        for name, clients, faults in setups:
            r = measure(items, args.batch_size, args.range_size, clients, faults, Path(tmp) / name.replace(" ", "_"))
            print(f"{name:<28}{r['published']:>6}{r['commits']:>8}{r['commits_per_item']:>14.4f}"
                  f"{r['api_per_item']:>10.4f}{r['resolver_per_item']:>15.4f}{r['conflicts_412']:>6}"
                  f"{r['busy_409']:>6}")
            if r["published"] != items:
                print(f"  LOST ITEMS: {items - r['published']}")
                ok = False
            if clients == 1 and faults is None:
                ok &= r["commits_per_item"] <= 1 / 16 and r["api_per_item"] <= 0.25
    print("targets (1 client, steady path): commits/item <= 0.0625, api/item <= 0.25:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
