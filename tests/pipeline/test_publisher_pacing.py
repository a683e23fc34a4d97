"""Publish steps sized from the store's commit budget and the clients active on it (the sharded
layout's batching, ``pipeline/pacing.py`` over ``publish/batch_sizing.py``).

The publisher runs for real on a fake clock that moves one second per item it takes from its inbox
(a steady 1 item/s); the memory store's ledger shows the other clients' publish steps. The emulated
runs are real ``HubStore`` clients on one loopback Hub repo that enforces the commit quota.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

from emulators.fleet import SHARDS_KINDS, FleetSpec, VirtualClock, run_fleet, synthetic_item
from emulators.hub import HubEmulator, ManualClock
from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.publisher import END, BatchPublisher, PublishOptions
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.pipeline.tracker import UnitTracker
from sharp_dataset_pipeline.publish.batch_sizing import BatchPolicy, size_batch
from sharp_dataset_pipeline.records import Batch, ProcessedItem, Unit
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore
from stores.memory_store import MemoryStore

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
UNIT = "bench/u0"


class SteadyInbox(queue.Queue):  # type: ignore[type-arg]
    """Every item taken moves the clock one second: items reach the publisher at 1/s."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.fake = clock

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        msg = super().get(block, timeout)
        if isinstance(msg, ProcessedItem):
            self.fake.advance(1.0)
        return msg


def _run_publisher(store: MemoryStore, clock: ManualClock, items: list[ProcessedItem], policy: BatchPolicy | None,
                   tmp_path: Path) -> BatchPublisher:
    tracker = UnitTracker()
    tracker.open(UNIT)
    inbox = SteadyInbox(clock)
    for pi in items:
        tracker.admit(UNIT)
        inbox.put(pi)
    tracker.close(UNIT, complete=True)
    inbox.put(END)
    opts = PublishOptions("me", 32, 3600.0, 1800.0, 3, policy=policy)
    publisher = BatchPublisher(store, tracker, opts, Metrics(clock), StopControl(tmp_path / "ctl"), inbox, clock=clock)
    thread = threading.Thread(target=publisher.run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    return publisher


def _items(tmp_path: Path, n: int, prefix: str = "i") -> list[ProcessedItem]:
    return [synthetic_item(tmp_path / "items", f"{prefix}{k:05d}", UNIT, SHARDS_KINDS) for k in range(n)]


def test_batches_are_the_size_the_policy_gives_for_the_budget_and_active_clients(tmp_path: Path) -> None:
    clock = ManualClock()
    store = MemoryStore(tmp_path / "scratch", clock=clock, commits_per_hour=90)
    for other in ("o1", "o2", "o3"):  # three other clients published a moment ago
        store.publish(Batch(other, items=_items(tmp_path, 1, prefix=other)))
    policy = BatchPolicy(commits_per_hour=1, min_items=16)  # the budget is the store's, not this one
    expected = size_batch(BatchPolicy(commits_per_hour=90, min_items=16), active_clients=4, item_rate=1.0)
    assert expected.bound == "budget" and expected.items == 178  # 90 * 0.9 / 4 = 20.25 an hour: 178 s apart

    publisher = _run_publisher(store, clock, _items(tmp_path, 3 * expected.items + 50), policy, tmp_path)

    mine = [e.items for e in store.books.events if e.client == "me"]
    assert mine == [expected.items] * 3 + [50]  # the last: what was left when the inbox ended
    assert publisher.pacer.decision.active_clients == 4
    times = [e.t for e in store.books.events if e.client == "me"]
    assert all(b - a >= expected.min_interval_s for a, b in zip(times[:-2], times[1:-1], strict=True))
    assert len(store.books.rows) == 3 + 3 * expected.items + 50


def test_a_store_without_a_commit_budget_keeps_the_fixed_batch_size(tmp_path: Path) -> None:
    clock = ManualClock()
    store = MemoryStore(tmp_path / "scratch", clock=clock)  # no budget, like the local store
    _run_publisher(store, clock, _items(tmp_path, 70), BatchPolicy(), tmp_path)
    assert [e.items for e in store.books.events] == [32, 32, 6]


def test_hub_store_reports_its_budget_and_every_client_last_publish(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        stores = [HubStore(HubOptions("t/pace", endpoint=hub.url, token="hf_test", client_id=c, commits_per_hour=77,
                                      layout="shards", cache_dir=tmp_path / c), clock=clock, sleep=clock.sleep)
                  for c in ("a", "b")]
        for s in stores:
            s.open()
        published = {}
        for s, c in zip(stores, ("a", "b"), strict=True):
            clock.advance(30.0)
            published[c] = clock()
            s.publish(Batch(c, items=_items(tmp_path / c, 2, prefix=c)))
        clock.advance(301.0)  # a's state is older than state_max_age_s: it reads the repo again
        pacing = stores[0].publish_pacing()
        assert pacing.commits_per_hour == 77
        assert dict(pacing.last_publish) == published  # b's progress file read from the repo, a's known
        assert pacing.now == clock()
        assert len(pacing.own_commits) == 2  # a's card commit and its publish step, the hour it counts
        clock.advance(10.0)
        leased_at = clock()
        assert stores[1].acquire(Unit("u/c", 0, 10), "c", 1800.0) is not None  # c took a unit, published nothing
        clock.advance(301.0)
        seen = dict(stores[0].publish_pacing().last_publish)
        assert seen == {**published, "c": leased_at}  # c counts before its first step lands
        files = HubStore(HubOptions("t/files", endpoint=hub.url, token="hf_test", client_id="f", commits_per_hour=77,
                                    layout="files", cache_dir=tmp_path / "f"), clock=clock, sleep=clock.sleep)
        files.open()
        assert files.publish_pacing().commits_per_hour == 0  # the files layout keeps its fixed batches
        for s in [*stores, files]:
            s.close()


def test_two_emulated_clients_stay_under_the_quota_and_both_publish(tmp_path: Path) -> None:
    spec = FleetSpec(clients=2, hours=0.5, commits_per_hour=60, policy=BatchPolicy(), kinds=SHARDS_KINDS,
                     store_options={"layout": "shards"})
    result = run_fleet(spec, tmp_path)
    assert result.stats.get("commit_429", 0) == 0  # the clients kept under the quota themselves
    assert result.max_commits_per_hour() <= spec.commits_per_hour
    made = int(spec.hours * 3600 * spec.rate)
    for client in result.clients:
        assert client.budget["published_items"] == made  # all of it, none starved
        sizes = [n for _, n in client.published_at]
        # 60 * 0.9 / 2 = 27 commits an hour each, so about 134 items a step once both are seen
        assert max(sizes) >= 130 and len(sizes) <= 20


def test_a_fleet_that_starts_together_stays_under_the_quota_from_its_first_hour(tmp_path: Path) -> None:
    # 4 clients start at once; each takes a unit lease an hour (as many leases as the 10 % reserve
    # holds). Paced by the interval alone, the steps made before they saw each other and the leases
    # came on top of an hour of steps: the emulator answered 429 (9 times) in the first hour.
    spec = FleetSpec(clients=4, hours=1.1, rate=0.25, range_size=900, commits_per_hour=40,
                     policy=BatchPolicy(commits_per_hour=40), kinds=SHARDS_KINDS, store_options={"layout": "shards"})
    result = run_fleet(spec, tmp_path)
    assert result.stats.get("commit_429", 0) == 0  # every commit of the fleet landed at the first try
    assert result.max_commits_per_hour() <= spec.commits_per_hour
    made = int(spec.hours * 3600 * spec.rate)
    for client in result.clients:
        assert client.budget["published_items"] == made  # everything, by every client: none starved
        assert len(client.published_at) >= 8  # publishing all along, not in one step at the end
        assert client.budget["commit_rate_limited_429"] == 0


def test_virtual_clock_moves_only_when_every_thread_waits() -> None:
    clock = VirtualClock(start=0.0)
    seen: list[tuple[str, float]] = []

    def worker(name: str, step: float) -> None:
        clock.join()
        try:
            for _ in range(3):
                clock.sleep(step)
                seen.append((name, clock()))
        finally:
            clock.leave()

    threads = [threading.Thread(target=worker, args=(n, s)) for n, s in (("a", 1.0), ("b", 1.5))]
    clock.hold(2)
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(seen, key=lambda x: (x[1], x[0])) == [("a", 1.0), ("b", 1.5), ("a", 2.0), ("a", 3.0), ("b", 3.0),
                                                        ("b", 4.5)]
