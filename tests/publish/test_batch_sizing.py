"""Batch sizing from the commit budget, the active clients and this client's rate."""

from __future__ import annotations

from collections import deque

import pytest

from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.publish.batch_sizing import (
    BatchPolicy,
    commits_per_hour_share,
    count_active_clients,
    ready_to_publish,
    size_batch,
)

POLICY = BatchPolicy(commits_per_hour=100, reserve_fraction=0.1, min_items=64, max_items=4096, max_wait_s=1800)


@pytest.mark.parametrize(
    ("clients", "rate", "items", "interval", "bound"),
    [
        # share = 90 / N commits per hour
        (1, 1.0, 64, 40.0, "min_items"),  # 40 s share interval, but 64 items take 64 s
        (1, 4.0, 160, 40.0, "budget"),
        (0, 4.0, 160, 40.0, "budget"),  # the ledger has not seen us yet: count ourselves
        (8, 1.0, 320, 320.0, "budget"),  # the fleet: 8 GPUs at 1 image/s
        (8, 0.1, 64, 320.0, "min_items"),  # 640 s to fill 64 items, under max_wait
        (8, 0.02, 36, 320.0, "max_wait"),  # 64 items would take 53 min: publish what 30 min made
        (64, 1.0, 2560, 2560.0, "budget"),  # the share interval is over max_wait: the budget wins
        (200, 1.0, 4096, 8000.0, "max_items"),  # cannot carry its rate: capped, still under budget
        (3, 0.0, 64, 120.0, "no_rate"),
    ],
)
def test_size_table(clients: int, rate: float, items: int, interval: float, bound: str) -> None:
    size = size_batch(POLICY, active_clients=clients, item_rate=rate)
    assert (size.items, size.bound) == (items, bound)
    assert size.min_interval_s == pytest.approx(interval)
    assert size.share_per_hour * max(1, clients) == pytest.approx(90.0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(commits_per_hour=0), dict(reserve_fraction=1.0), dict(reserve_fraction=-0.1),
     dict(min_items=0), dict(min_items=10, max_items=5), dict(max_wait_s=0)],
)
def test_bad_policy_is_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BatchPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [-1.0, float("nan"), float("inf")])
def test_bad_rate_is_a_config_error(rate: float) -> None:
    with pytest.raises(ConfigError):
        size_batch(POLICY, active_clients=1, item_rate=rate)


@pytest.mark.parametrize(
    ("pending", "oldest", "since", "expected"),
    [
        (0, 9999, 9999, False),
        (319, 100, 9999, False),
        (320, 100, 9999, True),
        (320, 100, 319, False),  # a full batch still waits for the share interval
        (5, 1800, 400, True),  # the oldest item waited max_wait
        (5, 1800, 300, False),
    ],
)
def test_ready_to_publish(pending: int, oldest: float, since: float, expected: bool) -> None:
    size = size_batch(POLICY, active_clients=8, item_rate=1.0)
    assert ready_to_publish(size, POLICY, pending=pending, oldest_wait_s=oldest, since_last_commit_s=since) is expected


@pytest.mark.parametrize(
    ("commits", "steps", "expected"),
    [
        (10, 9, True),  # 90 / 8 = 11.25 an hour: 11 commits of every kind
        (11, 10, False),  # the hour's share is used (a lease among them): wait, even at the interval
        (11, 0, True),  # ...unless it made no publish step this hour: never starved
        (30, 1, False),  # steps made while it saw fewer clients still count in the hour
    ],
)
def test_the_share_is_also_a_count_per_sliding_hour(commits: int, steps: int, expected: bool) -> None:
    size = size_batch(POLICY, active_clients=8, item_rate=1.0)
    assert commits_per_hour_share(size) == 11
    assert ready_to_publish(size, POLICY, pending=320, oldest_wait_s=100, since_last_commit_s=9999,
                            commits_last_hour=commits, steps_last_hour=steps) is expected


def test_count_active_clients() -> None:
    seen = {"a": 1000.0, "b": 400.0, "c": 999.0}
    assert count_active_clients(seen, now=1000.0, window_s=600, me="me") == 4
    assert count_active_clients(seen, now=1000.0, window_s=100, me="a") == 2  # b dropped out
    assert count_active_clients({}, now=0.0, window_s=60, me="me") == 1
    with pytest.raises(ConfigError):
        count_active_clients(seen, now=0.0, window_s=0, me="me")


def _simulate(rates: list[float], hours: float, policy: BatchPolicy) -> tuple[list[int], list[int], int]:
    """Clients on one fake clock, each sizing its batches from the ledger's client count and its own rate.

    Returns items made and published per client and the most commits seen in any sliding hour."""
    n = len(rates)
    made = [0.0] * n
    published = [0] * n
    pending_since: list[float | None] = [None] * n
    last_commit = [-1e9] * n
    commits: deque[float] = deque()
    worst = 0
    for t in range(int(hours * 3600)):
        for c, rate in enumerate(rates):
            before = int(made[c])
            made[c] += rate
            if int(made[c]) > before and pending_since[c] is None:
                pending_since[c] = float(t)
            pending = int(made[c]) - published[c]
            size = size_batch(policy, active_clients=n, item_rate=rate)
            oldest = t - pending_since[c] if pending_since[c] is not None else 0.0
            if ready_to_publish(size, policy, pending=pending, oldest_wait_s=oldest,
                                since_last_commit_s=t - last_commit[c]):
                published[c] += min(pending, policy.max_items)
                last_commit[c] = t
                pending_since[c] = float(t) if int(made[c]) > published[c] else None
                commits.append(t)
        while commits and t - commits[0] >= 3600:
            commits.popleft()
        worst = max(worst, len(commits))
    return [int(m) for m in made], published, worst


def test_eight_clients_stay_under_the_budget_and_none_is_starved() -> None:
    made, published, worst = _simulate([1.0] * 8, 3, POLICY)
    assert worst <= POLICY.commits_per_hour
    mean = sum(published) / len(published)
    assert min(published) >= 0.5 * mean
    assert all(p >= 0.85 * m for p, m in zip(published, made, strict=True))  # backlog stays one batch


def test_mixed_speeds_all_publish_what_they_make() -> None:
    rates = [4.0, 1.0, 1.0, 0.2, 0.05]
    made, published, worst = _simulate(rates, 3, POLICY)
    assert worst <= POLICY.commits_per_hour
    for p, m in zip(published, made, strict=True):
        assert p >= 0.75 * m  # the slow client too: at worst max_wait behind
