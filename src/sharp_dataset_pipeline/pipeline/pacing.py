"""When the publisher's pending items make a publish step: a fixed batch size and wait (today's rule),
or, for a store with a commit budget, a batch sized from that budget and the clients active on it
(``publish/batch_sizing``), so all clients together stay under it and none is starved.

The pacer measures this client's own item rate (items handed to the publisher, over a sliding
window) and reads the active clients from the store's ledger (``Store.publish_pacing``) at most every
``refresh_s``, after each of its own publish steps, and once more when a step is due by size and
interval, to count every commit this client landed in the last hour (leases too) against its share.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable

from ..errors import StoreError
from ..publish.batch_sizing import (
    HOUR_S,
    BatchPolicy,
    BatchSize,
    count_active_clients,
    ready_to_publish,
    size_batch,
)
from ..stores.base import PublishPacing, Store

log = logging.getLogger(__name__)

RATE_WINDOW_S = 900.0  # the item rate is measured over this much of the recent past
MIN_RATE_SPAN_S = 10.0  # never measure a rate over less than this (the first items would read as a burst)


@dataclasses.dataclass(frozen=True)
class PaceDecision:
    """The latest sizing: clients seen active and the batch size (``None``: fixed batching)."""

    active_clients: int
    size: BatchSize | None


class BatchPacer:
    """Decides when pending items are due. ``policy`` None, or a store without a commit budget: fixed
    ``batch_size`` / ``batch_wait_s``; otherwise the policy with the store's ``commits_per_hour``."""

    def __init__(self, store: Store, client_id: str, policy: BatchPolicy | None, *, batch_size: int,
                 batch_wait_s: float, clock: Callable[[], float], refresh_s: float = 60.0) -> None:
        self.store, self.client_id, self.policy = store, client_id, policy
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_s
        self.clock, self.refresh_s = clock, refresh_s
        self._arrivals: deque[tuple[float, int]] = deque()
        self._in_window = 0  # the items of ``_arrivals``
        self._last_commit = float("-inf")
        self._steps: deque[float] = deque()  # this client's publish steps of the last hour
        self._refreshed_at = float("-inf")
        self._budget_policy: BatchPolicy | None = None
        self._active = 1
        self._own: tuple[float, ...] = ()  # this client's commits of the last hour, on the store's clock
        self._own_offset = 0.0  # the pacer's clock minus the store's, at the last read
        self._full_until = float("-inf")  # the hour's share is used up until then (the pacer's clock)
        self.decision = PaceDecision(1, None)

    @property
    def active_window_s(self) -> float:
        """A client that made no commit for this long no longer counts as active: twice the longest a
        paced client waits between its commits, so a slow client never drops out."""
        assert self.policy is not None
        return 2.0 * max(self.policy.max_wait_s, self.batch_wait_s)

    def arrived(self, n: int = 1) -> None:
        """``n`` items (or failures) reached the publisher now."""
        now = self.clock()
        self._arrivals.append((now, n))
        self._in_window += n

    def committed(self) -> None:
        """A publish step just landed: the next one waits at least the share's interval from now, and
        counts against the share of every hour it is in."""
        self._last_commit = self.clock()
        self._steps.append(self._last_commit)
        self._refreshed_at = float("-inf")  # the state after our commit is fresh: re-read the clients

    def steps_last_hour(self) -> int:
        """This client's publish steps in the last hour (a sliding window, like the Hub's quota)."""
        now = self.clock()
        while self._steps and now - self._steps[0] >= HOUR_S:
            self._steps.popleft()
        return len(self._steps)

    def rate(self) -> float:
        """Items per second reaching the publisher over the recent window: the items after the oldest
        arrival in it, over the time since that arrival (exact for a steady rate)."""
        now = self.clock()
        while len(self._arrivals) > 1 and now - self._arrivals[0][0] > RATE_WINDOW_S:
            self._in_window -= self._arrivals.popleft()[1]
        if not self._arrivals:
            return 0.0
        first_at, first_n = self._arrivals[0]
        return (self._in_window - first_n) / max(MIN_RATE_SPAN_S, now - first_at)

    def _refresh(self, force: bool = False) -> None:
        now = self.clock()
        if self.policy is None or (not force and now - self._refreshed_at < self.refresh_s):
            return
        self._refreshed_at = now
        try:
            pacing: PublishPacing = self.store.publish_pacing()
        except StoreError as exc:  # keep the last count: sizing can wait for the next read
            log.warning("could not read the active clients for batch sizing: %s", exc)
            return
        if pacing.commits_per_hour <= 0:
            self._budget_policy = None
            return
        self._budget_policy = dataclasses.replace(self.policy, commits_per_hour=pacing.commits_per_hour)
        self._active = count_active_clients(pacing.last_publish, now=pacing.now, window_s=self.active_window_s,
                                            me=self.client_id)
        self._own, self._own_offset = pacing.own_commits, now - pacing.now

    def _own_last_hour(self) -> list[float]:
        """This client's commits of the last hour (every kind), on the pacer's clock."""
        now = self.clock()
        return [t + self._own_offset for t in self._own if now - (t + self._own_offset) < HOUR_S]

    def due(self, pending: int, since: float | None) -> bool:
        """Whether ``pending`` items (the oldest waiting since ``since``) should be published now."""
        self._refresh()
        now = self.clock()
        if self._budget_policy is None:
            self.decision = PaceDecision(1, None)
            if pending >= self.batch_size:
                return True
            return since is not None and now - since >= self.batch_wait_s
        oldest = 0.0 if since is None else now - since
        if not self._ready(pending, oldest, hour_counted=False) or now < self._full_until:
            return False
        # Due by size and interval: the hour's share is checked on a fresh read, so commits made
        # since the last one (a lease intake took) count too.
        self._refresh(force=True)
        if self._budget_policy is None or self._ready(pending, oldest, hour_counted=True):
            return True
        own = self._own_last_hour()
        self._full_until = (min(own) + HOUR_S) if own else now
        return False

    def _ready(self, pending: int, oldest_wait_s: float, *, hour_counted: bool) -> bool:
        assert self._budget_policy is not None
        size = size_batch(self._budget_policy, active_clients=self._active, item_rate=self.rate())
        self.decision = PaceDecision(self._active, size)
        commits = len(self._own_last_hour()) if hour_counted else 0
        return ready_to_publish(size, self._budget_policy, pending=pending, oldest_wait_s=oldest_wait_s,
                                since_last_commit_s=self.clock() - self._last_commit, commits_last_hour=commits,
                                steps_last_hour=self.steps_last_hour())

    def renew_every(self, lease_ttl_s: float) -> float:
        """How often held leases must be renewed by a publish step: a third of the TTL, or, when the
        commit share's interval is longer, that interval; while the hour's share is used up, two thirds
        of the TTL (a renewal is a commit too). Never more than two thirds: a lease is never lost."""
        base = max(1.0, lease_ttl_s / 3)
        size = self.decision.size
        if size is None:
            return base
        longest = 2 * lease_ttl_s / 3
        if self.clock() < self._full_until:
            return max(base, longest)
        return max(base, min(size.min_interval_s, longest))
