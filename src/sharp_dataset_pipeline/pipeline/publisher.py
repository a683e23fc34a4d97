"""The publish stage: one thread that gathers finished items into batches and publishes each
batch in one atomic store step, with the unit done markers and lease renewals riding along.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CommitQuotaSpent, StoreError
from ..observe.events import EventSink
from ..publish.batch_sizing import BatchPolicy
from ..records import Batch, Failure, Followup, ProcessedItem
from ..stores.base import Store
from .options import BatchOptions, ClaimOptions
from .pacing import BatchPacer
from .stop import StopControl
from .tracker import UnitTracker

log = logging.getLogger(__name__)

END = object()
WAKE = object()


@dataclass(frozen=True)
class PublishOptions:
    client_id: str
    batch_size: int
    batch_wait_s: float
    lease_ttl_s: float
    max_item_attempts: int
    followup_kind: str = ""
    delete_published_run_files: bool = False
    redo: str = ""
    # Batches sized from the store's commit budget and active clients (the sharded layout); None:
    # ``batch_size`` / ``batch_wait_s`` as they are. Its ``commits_per_hour`` is the store's.
    policy: BatchPolicy | None = None

    @classmethod
    def of(cls, client_id: str, claim: ClaimOptions, batch: BatchOptions, followup_kind: str = "") -> PublishOptions:
        """The publisher's view of a run's claim and batch groups."""
        return cls(client_id, batch.size, batch.wait_s, claim.lease_ttl_s, claim.max_item_attempts,
                   followup_kind=followup_kind, delete_published_run_files=not batch.keep_run_files,
                   redo=claim.redo, policy=batch.policy)


@dataclass
class _Pending:
    items: list[ProcessedItem] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    since: float | None = None

    def size(self) -> int:
        return len(self.items) + len(self.failures)


class BatchPublisher:
    """Consumes ``ProcessedItem`` / ``Failure`` messages from ``inbox`` until ``END``."""

    def __init__(
        self,
        store: Store,
        tracker: UnitTracker,
        opts: PublishOptions,
        sink: EventSink,
        control: StopControl,
        inbox: queue.Queue[object],
        on_published: Callable[[list[Followup]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_items_published: Callable[[list[ProcessedItem]], None] | None = None,
    ) -> None:
        """``on_published`` gets the followups and ``on_items_published`` the items of each landed
        batch (the share stage's feed); both must return at once."""
        self.store, self.tracker, self.opts, self.sink = store, tracker, opts, sink
        self.control, self.inbox, self.clock = control, inbox, clock
        self.on_published = on_published
        self.on_items_published = on_items_published
        self.attempts: dict[str, int] = {}
        self.failed_store = False
        # Set when a stopping run could not publish for the store's commit quota: the run ends with
        # exit 3 and the time the quota reopens; nothing more is published (or released) in this run.
        self.quota_spent: CommitQuotaSpent | None = None
        self._last_flush = clock()
        self._pending = _Pending()
        self.pacer = BatchPacer(store, opts.client_id, opts.policy, batch_size=opts.batch_size,
                                batch_wait_s=opts.batch_wait_s, clock=clock)

    def run(self) -> None:
        while True:
            msg = self._next_message()
            if msg is END:
                self._flush()
                return
            if isinstance(msg, ProcessedItem):
                self._add(self._pending.items, msg)
            elif isinstance(msg, Failure):
                self._add(self._pending.failures, msg)
            if self._due():
                self._flush()

    def _add(self, bucket: list, msg: object) -> None:
        bucket.append(msg)
        self.pacer.arrived()
        if self._pending.since is None:
            self._pending.since = self.clock()

    def _next_message(self) -> object:
        try:
            return self.inbox.get(timeout=0.25)
        except queue.Empty:
            return WAKE

    def _due(self) -> bool:
        now = self.clock()
        pending = self._pending
        if self.pacer.due(pending.size(), pending.since):
            return True
        if pending.size() == 0 and self.tracker.ready_after([]):
            return True
        renew_every = self.pacer.renew_every(self.opts.lease_ttl_s)
        return bool(self.tracker.held()) and now - self._last_flush >= renew_every

    def _retry_later(self, f: Failure) -> bool:
        before = self.tracker.prior_attempts.get(f.item_id, 0) + self.attempts.get(f.item_id, 0)
        return f.transient and before + 1 < self.opts.max_item_attempts

    def _settling(self, pending: _Pending) -> list[tuple[str, bool]]:
        out = [(p.row.unit, False) for p in pending.items]
        out += [(f.unit, self._retry_later(f)) for f in pending.failures]
        return out

    def _settled(self, batch: Batch, failed: list[Failure]) -> list[tuple[str, bool]]:
        """(unit, retry later) per item and failure of a landed batch, items that failed at publish
        time settling as failures (invariant 8: they failed alone, the rest was published)."""
        out = [(f.unit, self._retry_later(f)) for f in failed]
        left: dict[str, int] = {}
        for f in failed:
            left[f.unit] = left.get(f.unit, 0) + 1
        for p in batch.items:
            if left.get(p.row.unit, 0) > 0:
                left[p.row.unit] -= 1
                continue
            out.append((p.row.unit, False))
        out += [(f.unit, self._retry_later(f)) for f in batch.failures]
        return out

    def _flush(self) -> None:
        pending, self._pending = self._pending, _Pending()
        self._last_flush = self.clock()
        if self.failed_store or self.quota_spent is not None:
            return
        settling = self._settling(pending)
        units_done = self.tracker.ready_after(settling)
        followups = self._followups(pending.items)
        batch = Batch(
            client_id=self.opts.client_id,
            items=pending.items,
            failures=pending.failures,
            units_done=units_done,
            renew_units=[u for u in self.tracker.held() if u not in units_done],
            lease_ttl_s=self.opts.lease_ttl_s,
            followups=followups,
            redo=self.opts.redo,
        )
        if batch.empty():
            return
        self._publish(batch, settling)

    def _followups(self, items: list[ProcessedItem]) -> list[Followup]:
        if not self.opts.followup_kind:
            return []
        return [
            Followup(self.opts.followup_kind, p.row.id, p.followup_payload)
            for p in items
            if p.followup_payload
        ]

    def _publish(self, batch: Batch, settling: list[tuple[str, bool]]) -> None:
        started = self.clock()
        try:
            receipt = self.store.publish(batch)
        except CommitQuotaSpent as exc:
            self.quota_spent = exc
            log.warning("%s; %d finished items are left for the next run", exc, len(batch.items))
            self.control.request_stop("the store's commit quota is spent")
            for unit, _ in settling:
                self.tracker.abandon(unit)
            return
        except StoreError as exc:
            self.failed_store = True
            log.error("publish failed, nothing from this batch was published: %s", exc)
            self.control.request_stop("the store failed to publish")
            for unit, _ in settling:
                self.tracker.abandon(unit)
            return
        self.sink.busy("publish", self.clock() - started)
        self.sink.count("publish", "batches")
        if receipt.commit:
            self.pacer.committed()
        published = set(receipt.published_ids)
        self.sink.count("publish", "published", len(published))
        if receipt.replaced_ids:
            self.sink.count("publish", "replaced", len(receipt.replaced_ids))
        already = len(batch.items) - len(published & {p.row.id for p in batch.items}) - len(receipt.failed)
        if already > 0:
            self.sink.count("publish", "already_published", already)
        for f in receipt.failed:
            log.warning("item %s failed at publish, the rest of its batch was published: %s", f.item_id, f.detail)
        settled = self._settled(batch, receipt.failed) if receipt.failed else settling
        for f in [*batch.failures, *receipt.failed]:
            self.attempts[f.item_id] = self.attempts.get(f.item_id, 0) + 1
            self.sink.count("failed", f.reason)
        for unit, retry_later in settled:
            self.tracker.settle(unit, retry_later)
        held = set(receipt.lost_units) | set(receipt.units_held)
        self.tracker.confirm_done([u for u in batch.units_done if u not in held])
        for unit in receipt.lost_units:
            self.tracker.lose(unit)
        if receipt.lost_units:
            self.sink.count("source", "units_lost", len(receipt.lost_units))
        if batch.units_done:
            self.sink.count("publish", "units_done", len(batch.units_done))
        self.sink.event("batch", items=len(published), failures=len(batch.failures), commit=receipt.commit)
        landed = [p for p in batch.items if p.row.id in published]
        self._report_items(batch, landed, receipt.failed)
        if self.on_items_published and landed:
            self.on_items_published(landed)
        if self.opts.delete_published_run_files:
            _delete_run_files(batch, keep={p.share_file for p in landed if self.on_items_published})
        if self.on_published and batch.followups:
            self.on_published([f for f in batch.followups if f.item_id in published])

    def _report_items(self, batch: Batch, landed: list[ProcessedItem], failed: list[Failure]) -> None:
        """One ``item_done`` event per item and failure of a landed batch (``observe.items``)."""
        done = {p.row.id for p in landed} | {f.item_id for f in failed}
        for p in landed:
            self.sink.event("item_done", id=p.row.id, status="published", stage="publish")
        for p in batch.items:
            if p.row.id not in done:  # published meanwhile by another client, or by an earlier batch
                self.sink.event("item_done", id=p.row.id, status="skipped", reason="already_published",
                                stage="publish")
        for f in [*batch.failures, *failed]:
            self.sink.event("item_done", id=f.item_id, source=f.source, status="failed", reason=f.reason,
                            stage=f.stage, detail=f.detail)


def _delete_run_files(batch: Batch, keep: set[Path | None]) -> None:
    """The store holds its own copy now; drop the run folder's (the hub store's 66 MB per item).
    Files in ``keep`` wait for the share stage, which deletes them once it has shared them."""
    for item in batch.items:
        paths = [f.local_path for f in item.files] + list(item.scratch)
        if item.share_file is not None and item.share_file not in paths:
            paths.append(item.share_file)  # a share file of its own (never published)
        for path in paths:
            if path in keep:
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not delete %s after publishing: %s", path, exc)


class FollowupWorker:
    """Completes followups (e.g. Unsplash download tracking) off the publish thread.

    Followups the source could not complete yet (its API quota is spent) are kept and tried again
    with the next submission, every ``retry_s`` while idle, and once more before the run ends; what
    is still left stays recorded in the store for the next run.
    """

    def __init__(self, store: Store, complete: Callable[[list[Followup]], list[Followup]], sink: EventSink,
                 retry_s: float = 60.0):
        self.store, self.complete, self.sink, self.retry_s = store, complete, sink, retry_s
        self.inbox: queue.Queue[object] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="followups", daemon=True)
        self._waiting: list[Followup] = []

    def submit(self, followups: list[Followup]) -> None:
        if followups:
            self.inbox.put(followups)

    def _run(self) -> None:
        while True:
            try:
                msg = self.inbox.get(timeout=self.retry_s if self._waiting else None)
            except queue.Empty:
                msg = []
            if msg is END:
                if self._waiting:
                    self._attempt([])
                return
            assert isinstance(msg, list)
            self._attempt(msg)

    def _attempt(self, new: list[Followup]) -> None:
        """Complete one followup at a time and record each completion before the next call, so a
        kill -9 repeats at most the one call in flight; the first one not settled ends the pass."""
        todo = self._waiting + new
        for n, followup in enumerate(todo):
            done = self.complete([followup])
            if not done:
                self._waiting = todo[n:]
                return
            self.store.complete_followups(done)
            self.sink.count("followups", "done", len(done))
        self._waiting = []
