"""A fleet on one Hub repo: 8 clients at 1 image/s each, per-item layout vs sharded layout, same run.

Each client is the real publish path (``BatchPublisher`` over a real ``HubStore``, HTTP to the loopback
Hub emulator), fed with small synthetic finished items at ``--rate`` per second; one unit lease
(a commit) per ``--range-size`` items, as intake takes them. The emulator enforces the Hub's commit
quota: past ``HF_COMMITS_PER_HOUR`` (``--commits-per-hour``) commits in a rolling hour it answers
429 with ``Retry-After``. Time is virtual (``tests/emulators/fleet.py``): it moves only when every
client waits, so two hours of a fleet take a minute or two and what is measured is the design, not this
machine. The per-item layout publishes as today (32 items per batch, 1 s wait, each client's
own governor at the budget); the sharded layout sizes its batches from the budget and the active
clients (``publish/batch_sizing.py``). Rates are taken over the last hour (the first one is the start;
items held back there by a client's hourly share land in the second, so that rate can exceed what is
made) and over the whole run.

Goals (issue 14): total commits/h <= the budget; sharded items/h >= 8x the per-item layout's; no
client below half the mean rate; commits per published item <= 1/64 for one client, everything counted.

    python benchmarks/bench_fleet.py [--quick] [--clients 8] [--rate 1] [--hours 2] [--commits-per-hour 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # the LFS path, as the tests run it
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from emulators.fleet import FILES_KINDS, SHARDS_KINDS, FleetResult, FleetSpec, run_fleet  # noqa: E402
from harness import machine_line  # noqa: E402
from sharp_dataset_pipeline.publish.batch_sizing import BatchPolicy  # noqa: E402

HOUR_S = 3600.0


def _steady(result: FleetResult) -> tuple[float, float]:
    """The window rates are taken over: the last hour before the producers stopped."""
    return max(result.start, result.end - HOUR_S), result.end


def report(name: str, result: FleetResult) -> dict[str, float]:
    t0, t1 = _steady(result)
    hours = (t1 - t0) / HOUR_S
    per_client = [c.published_between(t0, t1) / hours for c in result.clients]
    mean = sum(per_client) / len(per_client)
    c0 = result.clients[0]
    commits = result.max_commits_per_hour()
    whole = sum(c.published_between(result.start, result.end) for c in result.clients)
    made = result.spec.clients * result.spec.rate * (result.end - result.start)
    print(f"{name}: {sum(per_client):,.0f} items/h published in the last hour, "
          f"{whole / ((result.end - result.start) / HOUR_S):,.0f} items/h over the whole run "
          f"({whole:,} of the {made:,.0f} made); repo commits in its busiest hour {commits} "
          f"(budget {result.spec.commits_per_hour}), 429 answers {result.stats.get('commit_429', 0)}")
    print(f"  per client items/h: {', '.join(f'{r:,.0f}' for r in per_client)}; slowest {min(per_client):,.0f} "
          f"vs half the mean {mean / 2:,.0f}")
    print(f"  client c0: {c0.budget['commits']} commits for {c0.budget['published_items']:,} items = "
          f"1/{c0.budget['published_items'] / max(1, c0.budget['commits']):.0f} per item (everything counted)")
    return {"items_h": sum(per_client), "commits_h": commits, "min_client": min(per_client), "mean": mean,
            "c0_per_item": c0.budget["commits"] / max(1, c0.budget["published_items"]),
            "rate_429": result.stats.get("commit_429", 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 clients, 1.25 hours")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1.0, help="items per second per client")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--commits-per-hour", type=int, default=100)
    parser.add_argument("--range-size", type=int, default=3600, help="items per unit lease")
    args = parser.parse_args(argv)
    clients, hours = (4, 1.25) if args.quick else (args.clients, args.hours)
    print(machine_line())
    print(f"{clients} clients at {args.rate:g} item/s each, {hours:g} h virtual, budget "
          f"{args.commits_per_hour} commits/h (the emulator's quota), {args.range_size} items per unit lease")
    common = dict(clients=clients, rate=args.rate, hours=hours, commits_per_hour=args.commits_per_hour,
                  range_size=args.range_size)
    runs = {
        # Today's per-item layout as a client runs it: fixed batches, its own governor at the whole budget.
        # What it cannot publish queues up; that backlog is dropped at the end, not drained for hours.
        "files  (per-item)": FleetSpec(**common, kinds=FILES_KINDS, store_options={"layout": "files"}, drain=False),
        "shards (sharded) ": FleetSpec(**common, policy=BatchPolicy(commits_per_hour=args.commits_per_hour),
                                       kinds=SHARDS_KINDS, store_options={"layout": "shards"}),
    }
    out = {}
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        for name, spec in runs.items():
            work = Path(tmp) / name.split()[0]
            started = time.perf_counter()
            result = run_fleet(spec, work)
            print(f"({name.split()[0]}: {time.perf_counter() - started:.0f} s of wall time)")
            out[name.split()[0]] = report(name, result)
    files, shards = out["files"], out["shards"]
    ratio = shards["items_h"] / max(1.0, files["items_h"])
    goals = {
        f"total commits/h <= {args.commits_per_hour} (sharded)": shards["commits_h"] <= args.commits_per_hour,
        "no 429 answers (sharded: the clients kept under the quota)": shards["rate_429"] == 0,
        f"sharded items/h {ratio:.1f}x the per-item layout's (>= 8x)": ratio >= 8.0,
        "no client below half the mean (sharded)": shards["min_client"] >= shards["mean"] / 2,
        f"commits per item for c0 1/{1 / shards['c0_per_item']:.0f} (<= 1/64)": shards["c0_per_item"] <= 1 / 64,
    }
    for goal, met in goals.items():
        print(f"{'met    ' if met else 'NOT met'} {goal}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
