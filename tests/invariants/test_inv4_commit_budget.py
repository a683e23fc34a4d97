"""Invariant 4: on the hub, at most one commit per batch on the steady path (files, index shard,
progress and lease renewal together), and a commits-per-hour governor keeps the whole client under
its budget, background commits included."""

from __future__ import annotations

from pathlib import Path

from emulators.hub import HubEmulator, ManualClock, make_items
from sharp_dataset_pipeline.publish import layout
from sharp_dataset_pipeline.records import Batch, Unit
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore

REPO = "tester/budget"
TTL = 3600.0


def _store(hub: HubEmulator, clock: ManualClock, tmp_path: Path, **kw) -> HubStore:
    store = HubStore(HubOptions(REPO, layout="files", endpoint=hub.url, token="hf_budgettest", client_id="steady",
                                cache_dir=tmp_path / "cache", **kw), clock=clock, sleep=clock.sleep)
    store.open()
    return store


def test_one_commit_per_batch_carrying_everything(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        store = _store(hub, clock, tmp_path)
        unit = Unit("list/000000-000099", 0, 100)
        assert store.acquire(unit, "steady", TTL) is not None
        before = len(hub.history(REPO))
        batches = 6
        for n in range(batches):
            clock.advance(TTL / 3)  # long enough that every batch must renew the lease
            ids = [f"b{n}i{k:02d}" for k in range(16)]
            last = n == batches - 1
            batch = Batch("steady", items=make_items(tmp_path / "items", ids, unit=unit.key),
                          renew_units=[] if last else [unit.key], units_done=[unit.key] if last else [],
                          lease_ttl_s=TTL)
            assert len(store.publish(batch).published_ids) == 16
        commits = hub.history(REPO)[before:]
        assert len(commits) == batches
        lease, done = layout.lease_path(unit.key), layout.unit_done_path(unit.key)
        for commit in commits[:-1]:
            added = set(commit.added)
            assert lease in added, "the lease renewal rode on the publish commit"
            assert any(p.startswith("data/train-shard-") for p in added)
            assert sum(p.startswith("photos/") for p in added) == 32
            assert any(p.startswith(".coord/progress/") for p in added)
        assert done in commits[-1].added and lease in commits[-1].deleted
        report = store.budget_report()
        assert report["commits_per_published_item"] <= 1 / 16 + 1e-9 + 2 / (16 * batches)  # + card and lease


def test_governor_keeps_a_long_run_under_the_hourly_budget(tmp_path: Path) -> None:
    clock = ManualClock()
    per_hour = 8
    with HubEmulator(clock=clock) as hub:
        store = _store(hub, clock, tmp_path, commits_per_hour=per_hour, auto_compact_shards=5)
        start = clock()
        for n in range(30):
            unit = Unit(f"u/{n:03d}", 0, 1)
            assert store.acquire(unit, "steady", TTL) is not None
            store.publish(Batch("steady", items=make_items(tmp_path / "i", [f"x{n:03d}"], unit=unit.key),
                                units_done=[unit.key], lease_ttl_s=TTL))
            clock.advance(5.0)
        store.release(["none"], "steady")
        times = [c.at for c in hub.history(REPO)[1:]]  # after the repo's initial commit
        assert len(times) > 60  # leases, publishes, compactions: all of them governed
        for i, t in enumerate(times):
            assert len([s for s in times[i:] if s - t < 3600.0]) <= per_hour
        assert store.budget_report()["commits_last_hour"] <= per_hour
        assert clock() - start > (len(times) / per_hour - 2) * 3600  # it really waited


def test_one_commit_per_batch_in_the_sharded_layout_with_a_few_files_each(tmp_path: Path) -> None:
    """Sharded: the same one commit per batch, now carrying a few files whatever the batch size (its
    tars, its Parquet index shard, its JSONL rows, the lease renewal, progress), never one per item."""
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        store = HubStore(HubOptions(REPO, endpoint=hub.url, token="hf_budgettest", client_id="steady",
                                    cache_dir=tmp_path / "cache"), clock=clock, sleep=clock.sleep)
        store.open()
        assert store.layout == "shards"
        unit = Unit("list/000000-000099", 0, 100)
        assert store.acquire(unit, "steady", TTL) is not None
        before = len(hub.history(REPO))
        batches, size = 4, 48
        for n in range(batches):
            clock.advance(TTL / 3)
            last = n == batches - 1
            batch = Batch("steady", items=make_items(tmp_path / "items", [f"s{n}i{k:02d}" for k in range(size)],
                                                     unit=unit.key),
                          renew_units=[] if last else [unit.key], units_done=[unit.key] if last else [],
                          lease_ttl_s=TTL)
            assert len(store.publish(batch).published_ids) == size
        commits = hub.history(REPO)[before:]
        assert len(commits) == batches
        for commit in commits:
            added = set(commit.added)
            assert sum(p.startswith("data/shards/") for p in added) == 1
            assert sum(p.startswith("data/ply/") for p in added) == 1
            assert sum(p.startswith("data/index/pending/") for p in added) == 1
            assert any(p.startswith("data/train-shard-") for p in added)
            assert not any(p.startswith("photos/") for p in added)
            assert len(added) <= 7  # tars, Parquet, JSONL, progress, lease or done marker
        report = store.budget_report()
        assert report["commits_per_published_item"] <= 1 / size + 3 / (size * batches)  # + marker/card, lease
        store.close()
