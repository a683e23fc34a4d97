"""How many items one publish step should carry, so that every client of a repository together stays under
the commit budget and none of them is starved. Pure: counts, rates and times in, a size out.

The Hub caps commits per repository (``HF_COMMITS_PER_HOUR``, 100 by default, under the ~128/h seen),
however many machines share it. Each of the N active clients (seen in the ledger) gets an equal share
of what is left after a reserve for other commits (leases, compaction, the card)::

    share = budget * (1 - reserve) / N          commits per hour for this client
    interval = 3600 / share                     seconds between this client's commits, at least
    items = rate * interval                     what this client makes in that time

An equal share is what keeps everyone publishing: a fast client gets bigger batches, not more commits,
so it cannot crowd a slow one out. ``min_items`` keeps commits per item low (1/64 by default) and tars
near 1 GB; ``max_wait_s`` stops a slow client from holding finished items for hours (it may then commit
smaller batches, never more often than its share); ``max_items`` bounds memory and disk. When even
``max_items`` per share cannot carry a client's rate, the result says so (``bound="max_items"``) and
the client publishes ``max_items`` per interval: slower, but still under the budget.

The share is also a count per sliding hour (``commits_per_hour_share``) of everything the client
commits, leases included, as the Hub counts them: the interval spaces the steps, the count keeps
every hour under the budget from the first step on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

HOUR_S = 3600.0


@dataclass(frozen=True)
class BatchPolicy:
    """The limits batch sizing works within (from settings; ``commits_per_hour`` is ``HF_COMMITS_PER_HOUR``)."""

    commits_per_hour: int = 100
    reserve_fraction: float = 0.1
    min_items: int = 64
    max_items: int = 4096
    max_wait_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.commits_per_hour < 1:
            raise ConfigError(f"commits per hour must be >= 1, got {self.commits_per_hour}")
        if not 0.0 <= self.reserve_fraction < 1.0:
            raise ConfigError(f"reserve fraction must be in [0, 1), got {self.reserve_fraction}")
        if not 1 <= self.min_items <= self.max_items:
            raise ConfigError(f"need 1 <= min_items <= max_items, got {self.min_items} and {self.max_items}")
        if self.max_wait_s <= 0:
            raise ConfigError(f"max wait must be positive, got {self.max_wait_s}")


@dataclass(frozen=True)
class BatchSize:
    """The decision: publish ``items`` per step, and never two steps less than ``min_interval_s`` apart.

    ``bound`` names what decided the size: ``budget`` (the commit share), ``min_items``, ``max_wait``
    (a slow client), ``max_items`` (the client makes more than it can publish) or ``no_rate`` (nothing
    measured yet: ``min_items``).
    """

    items: int
    min_interval_s: float
    share_per_hour: float
    bound: str


def size_batch(policy: BatchPolicy, *, active_clients: int, item_rate: float) -> BatchSize:
    """The batch size of one client making ``item_rate`` items/s while ``active_clients`` (itself included;
    0 is read as 1) share the repository."""
    if item_rate < 0 or not math.isfinite(item_rate):
        raise ConfigError(f"item rate must be a finite number >= 0, got {item_rate}")
    clients = max(1, active_clients)
    share = policy.commits_per_hour * (1.0 - policy.reserve_fraction) / clients
    min_interval = HOUR_S / share
    if item_rate == 0:
        return BatchSize(policy.min_items, min_interval, share, "no_rate")
    # Waiting longer than the share's interval is always allowed; shorter never.
    interval, bound = min_interval, "budget"
    fill_min = policy.min_items / item_rate
    if fill_min > interval:
        interval, bound = fill_min, "min_items"
    if interval > policy.max_wait_s and policy.max_wait_s >= min_interval:
        interval, bound = policy.max_wait_s, "max_wait"
    elif interval > policy.max_wait_s:
        interval, bound = min_interval, "budget"
    items = math.ceil(item_rate * interval - 1e-9)
    if items > policy.max_items:
        items, bound = policy.max_items, "max_items"
    return BatchSize(max(1, items), min_interval, share, bound)


def commits_per_hour_share(size: BatchSize) -> int:
    """The most commits of every kind (publish steps, leases, the card...) one client may land in any
    sliding hour: its share, rounded down, so that N clients together stay under ``budget * (1 -
    reserve)`` in every hour, whatever their phases and however their view of N changed."""
    return max(1, math.floor(size.share_per_hour + 1e-9))


def ready_to_publish(size: BatchSize, policy: BatchPolicy, *, pending: int, oldest_wait_s: float,
                     since_last_commit_s: float, commits_last_hour: int = 0, steps_last_hour: int = 0) -> bool:
    """Whether a client holding ``pending`` finished items should publish now: it has a full batch, or its
    oldest item has waited ``max_wait_s`` — and never sooner than its share allows after its last commit,
    nor while its commits of the last sliding hour (``commits_last_hour``, every kind) fill its share of
    that hour, unless it made no publish step in that hour (``steps_last_hour``): none is starved.

    The interval alone bounds a client's long-run rate, not each hour: steps made while it saw fewer
    clients (at start-up, before the others' first commits) and its leases came on top of a full hour
    of steps at the interval, and a fleet that starts together went over the budget."""
    if pending <= 0 or since_last_commit_s < size.min_interval_s:
        return False
    if commits_last_hour >= commits_per_hour_share(size) and steps_last_hour > 0:
        return False
    return pending >= size.items or oldest_wait_s >= policy.max_wait_s


def count_active_clients(last_seen: Mapping[str, float], *, now: float, window_s: float, me: str) -> int:
    """Clients whose last ledger activity (heartbeat, lease, publish; wall-clock seconds) is within
    ``window_s`` of ``now``, always counting ``me``. Clients that stopped drop out after the window, so
    the others' shares grow back."""
    if window_s <= 0:
        raise ConfigError(f"active-client window must be positive, got {window_s}")
    active = {c for c, t in last_seen.items() if now - t <= window_s}
    active.add(me)
    return len(active)
