"""A fleet of publishing clients on one emulated Hub repo, in virtual time.

Each client is the real publish path: a ``BatchPublisher`` thread over a real ``HubStore`` talking
HTTP to the loopback ``HubEmulator``, fed by a producer thread that takes a unit lease (a commit, as
intake does) and hands over one synthetic finished item every ``1 / rate`` seconds. Time is a
``VirtualClock`` shared by every client thread and by the emulator (its commit quota included): it
moves only when every client thread is waiting (a sleep, a governor or ``Retry-After`` pause, an
empty inbox), so an hour of a fleet runs in seconds and what is measured is the design, not this
machine. Used by ``benchmarks/bench_fleet.py`` and ``tests/pipeline/test_publisher_pacing.py``.
"""

from __future__ import annotations

import hashlib
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.publisher import END, BatchPublisher, PublishOptions
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.pipeline.tracker import UnitTracker
from sharp_dataset_pipeline.publish.batch_sizing import BatchPolicy
from sharp_dataset_pipeline.records import IndexRow, ProcessedItem, PublishedFile, Unit
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore

from .hub import HubEmulator, HubFaults

START = 1_800_000_000.0


STALL_S = 2.0


class VirtualClock:
    """Time shared by a set of threads: it advances (to the earliest deadline) only when every joined
    thread waits and none of them can go on. Callable: ``clock()`` is the current time.

    A joined thread may also block on a real lock held by one that waits here (a store's commit
    lock held across a ``Retry-After`` pause): when nothing has changed for ``STALL_S`` real seconds,
    the waiting threads are all that can move, and time advances for them. The threads that were
    neither waiting nor gone then count as blocked until they next wait (or leave), so one such
    lock costs ``STALL_S`` of real time once, not once per step of virtual time it is held.
    """

    def __init__(self, start: float = START) -> None:
        self._now = start
        self._cv = threading.Condition()
        self._joined: set[int] = set()
        self._waiting: dict[int, tuple[float, Callable[[], bool]]] = {}
        self._blocked: set[int] = set()  # joined threads found blocked on a real lock (see above)
        self._held = 0
        self._changed_at = time.monotonic()

    def __call__(self) -> float:
        return self._now

    def hold(self, threads: int) -> None:
        """Time stands still until ``threads`` more threads have joined (call before starting them)."""
        with self._cv:
            self._held += threads

    def join(self) -> None:
        """The calling thread takes part: time waits for it."""
        with self._cv:
            self._joined.add(threading.get_ident())
            self._held = max(0, self._held - 1)
            self._changed_at = time.monotonic()

    def leave(self) -> None:
        with self._cv:
            self._joined.discard(threading.get_ident())
            self._blocked.discard(threading.get_ident())
            self._changed_at = time.monotonic()
            self._advance()

    def sleep(self, seconds: float) -> None:
        self.wait_for(lambda: False, seconds)

    def notify(self) -> None:
        """Something a waiting thread may wait for changed (an inbox got a message)."""
        with self._cv:
            self._changed_at = time.monotonic()
            self._cv.notify_all()

    def wait_for(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` (True) or ``timeout`` virtual seconds passed (False)."""
        me = threading.get_ident()
        with self._cv:
            self._blocked.discard(me)
            deadline = self._now + max(0.0, timeout)
            while True:
                if ready():
                    return True
                if self._now >= deadline:
                    return False
                self._waiting[me] = (deadline, ready)
                self._advance()
                if self._now < deadline and not ready():
                    self._cv.wait(timeout=0.5)
                    if time.monotonic() - self._changed_at > STALL_S:
                        self._advance(stalled=True)
                self._waiting.pop(me, None)

    def _advance(self, stalled: bool = False) -> None:
        if stalled:
            self._blocked = self._joined - set(self._waiting)
        if self._held or not self._waiting or not self._joined <= set(self._waiting) | self._blocked:
            return
        if any(d <= self._now or ready() for d, ready in self._waiting.values()):
            self._cv.notify_all()
            return
        self._now = min(d for d, _ in self._waiting.values())
        self._changed_at = time.monotonic()
        self._cv.notify_all()


class VirtualInbox(queue.Queue):  # type: ignore[type-arg]
    """The publisher's inbox, waiting in virtual time; an empty inbox answers after ``poll_s`` at the
    soonest (the publisher polls every 0.25 s: in virtual time that would only cost real time)."""

    poll_s = 1.0

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.vclock = clock

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.vclock.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        if self.vclock.wait_for(lambda: self.qsize() > 0, math.inf if timeout is None else max(timeout, self.poll_s)):
            return super().get(block=False)
        raise queue.Empty


def synthetic_item(work: Path, item_id: str, unit: str, kinds: tuple[tuple[str, str, int], ...]) -> ProcessedItem:
    """A finished item with small files (``kinds``: (kind, extension, bytes)), as post-processing
    hands it over; the bytes are unique per item and file."""
    work.mkdir(parents=True, exist_ok=True)
    row = IndexRow(id=item_id, source="bench", unit=unit, predictor="planar", model_version="bench")
    files = []
    for kind, ext, size in kinds:
        seed = hashlib.sha256(f"{item_id}.{ext}".encode()).digest()
        data = (seed * (size // len(seed) + 1))[:size]
        local = work / f"{item_id}.{ext}"
        local.write_bytes(data)
        repo = f"photos/{item_id}/{item_id}.{ext}"
        digest = hashlib.sha256(data).hexdigest()
        files.append(PublishedFile(kind, repo, local, len(data), digest))
        if kind in ("image", "ply"):
            setattr(row, f"{kind}_path", repo)
            setattr(row, f"{kind}_size", len(data))
            setattr(row, f"{kind}_sha256", digest)
    return ProcessedItem(row, files, camera={"focal_px": 1000.0})


FILES_KINDS = (("image", "jpg", 2048), ("ply", "ply", 4096), ("preview", "preview.webp", 512))
SHARDS_KINDS = (("image", "jpg", 2048), ("spz", "spz", 1024), ("preview", "preview.webp", 512))


@dataclass(frozen=True)
class FleetSpec:
    """One fleet run: ``clients`` at ``rate`` items/s each for ``hours`` of virtual time."""

    clients: int = 8
    rate: float = 1.0
    hours: float = 2.0
    commits_per_hour: int = 100  # the repo's quota (the emulator's) and each client's governor
    policy: BatchPolicy | None = None  # None: fixed batches (the files layout)
    batch_size: int = 32
    batch_wait_s: float = 1.0
    range_size: int = 3600
    lease_ttl_s: float = 1800.0
    kinds: tuple[tuple[str, str, int], ...] = FILES_KINDS
    store_options: dict[str, Any] = field(default_factory=dict)  # more HubOptions fields (a layout)
    # False: what is still queued for a publisher at the end is dropped, not published. A layout
    # over its budget queues without bound here (the pipeline's bounded queues would hold the GPU
    # back instead), and draining that backlog would take many hours of virtual time.
    drain: bool = True


@dataclass
class ClientResult:
    client: str
    published_at: list[tuple[float, int]]  # (time, items) per landed batch
    budget: dict[str, Any]

    def published_between(self, t0: float, t1: float) -> int:
        return sum(n for t, n in self.published_at if t0 <= t < t1)


@dataclass
class FleetResult:
    spec: FleetSpec
    start: float
    end: float
    clients: list[ClientResult]
    applied_at: list[float]  # every commit the repo applied
    stats: dict[str, int]

    def max_commits_per_hour(self) -> int:
        """The most commits the repo applied in any rolling hour."""
        ts, best, lo = sorted(self.applied_at), 0, 0
        for hi, t in enumerate(ts):
            while t - ts[lo] >= 3600.0:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


def _producer(clock: VirtualClock, store: HubStore, tracker: UnitTracker, inbox: VirtualInbox, cid: str,
              spec: FleetSpec, end: float, work: Path) -> None:
    clock.join()
    try:
        n = 0
        while clock() < end:
            key = f"bench/{cid}/{n:06d}-{n + spec.range_size - 1:06d}"
            if store.acquire(Unit(key, n, n + spec.range_size), cid, spec.lease_ttl_s) is None:
                raise RuntimeError(f"{cid} could not lease its own unit {key}")
            tracker.open(key)
            made = 0
            while made < spec.range_size and clock() < end:
                clock.sleep(1.0 / spec.rate)
                tracker.admit(key)
                inbox.put(synthetic_item(work, f"{cid}_{n + made:07d}", key, spec.kinds))
                made += 1
            tracker.close(key, complete=True)
            n += spec.range_size
    finally:
        while not spec.drain:
            try:
                queue.Queue.get(inbox, block=False)  # not the virtual wait: never blocks
            except queue.Empty:
                break
        inbox.put(END)
        clock.leave()


def _publisher(clock: VirtualClock, publisher: BatchPublisher) -> None:
    clock.join()
    try:
        publisher.run()
    finally:
        clock.leave()


def run_fleet(spec: FleetSpec, work: Path, faults: HubFaults | None = None) -> FleetResult:
    """Run ``spec`` on a fresh emulated repo whose commit quota is ``spec.commits_per_hour`` an hour."""
    clock = VirtualClock()
    faults = faults or HubFaults(quota_commits=spec.commits_per_hour, quota_window_s=3600.0)
    start = clock()
    end = start + spec.hours * 3600.0
    threads: list[threading.Thread] = []
    results: list[ClientResult] = []
    stores: list[HubStore] = []
    with HubEmulator(clock=clock, faults=faults) as hub:
        clock.join()  # this thread, while it opens the stores (the card commit may wait on the governor)
        for i in range(spec.clients):
            cid = f"c{i}"
            store = HubStore(HubOptions("bench/fleet", endpoint=hub.url, token="hf_fleet", client_id=cid,
                                        commits_per_hour=spec.commits_per_hour, cache_dir=work / f"cache{i}",
                                        **spec.store_options), clock=clock, sleep=clock.sleep)
            store.open()
            stores.append(store)
            landed: list[tuple[float, int]] = []
            result = ClientResult(cid, landed, {})
            results.append(result)

            def on_event(kind: str, _landed: list[tuple[float, int]] = landed, **fields: Any) -> None:
                if kind == "batch" and fields.get("items"):
                    _landed.append((clock(), int(fields["items"])))

            tracker = UnitTracker()
            inbox = VirtualInbox(clock)
            opts = PublishOptions(cid, spec.batch_size, spec.batch_wait_s, spec.lease_ttl_s, 3,
                                  delete_published_run_files=True, policy=spec.policy)
            publisher = BatchPublisher(store, tracker, opts, Metrics(clock, on_event), StopControl(work / f"ctl{i}"),
                                       inbox, clock=clock)
            threads.append(threading.Thread(target=_producer, name=f"make-{cid}", daemon=True,
                                            args=(clock, store, tracker, inbox, cid, spec, end, work / f"items{i}")))
            threads.append(threading.Thread(target=_publisher, name=f"pub-{cid}", daemon=True,
                                            args=(clock, publisher)))
        clock.hold(len(threads))
        for t in threads:
            t.start()
        clock.leave()
        for t in threads:
            t.join()
        clock.join()
        for store, result in zip(stores, results, strict=True):
            result.budget = store.budget_report()
            store.close()
        clock.leave()
        applied = list(hub.repo("bench/fleet").applied_at)
        stats = dict(hub.stats)
    for i in range(spec.clients):
        shutil.rmtree(work / f"items{i}", ignore_errors=True)
    return FleetResult(spec, start, end, results, applied, stats)
