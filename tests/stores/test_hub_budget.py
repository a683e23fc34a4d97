"""The commits-per-hour governor and the call counters (pure, fake clock)."""

from __future__ import annotations

import pytest

from emulators.hub import ManualClock
from sharp_dataset_pipeline.stores.commit_budget import CallCounter, CommitBudget, SlidingWindowLimit


def test_allows_the_limit_then_waits_for_the_oldest_to_leave_the_window() -> None:
    clock = ManualClock(0.0)
    budget = CommitBudget(3, clock=clock)
    for t in (0.0, 10.0, 20.0):
        clock.now = t
        assert budget.delay() == 0.0
        budget.record()
    clock.now = 30.0
    assert budget.delay() == pytest.approx(3600.0 - 30.0)
    clock.now = 3600.0
    assert budget.delay() == 0.0
    assert budget.count() == 2


def test_a_pause_blocks_and_is_never_shortened() -> None:
    clock = ManualClock(0.0)
    limit = SlidingWindowLimit(100, 60.0, clock)
    limit.pause(120.0)
    limit.pause(5.0)
    assert limit.delay() == pytest.approx(120.0)
    clock.advance(120.0)
    assert limit.delay() == 0.0


def test_a_long_run_stays_under_the_limit_in_every_sliding_hour() -> None:
    clock = ManualClock(0.0)
    budget = CommitBudget(20, clock=clock)
    sent: list[float] = []
    while clock.now < 10 * 3600:
        clock.sleep(budget.delay())
        budget.record()
        sent.append(clock.now)
        clock.advance(7.0)  # a producer much faster than the quota
    for i, t in enumerate(sent):
        in_hour = [s for s in sent[i:] if s - t < 3600.0]
        assert len(in_hour) <= 20
    # ... and it is not needlessly slow: close to the limit over the run.
    assert len(sent) >= 20 * 10


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_a_useless_limit(bad: int) -> None:
    with pytest.raises(ValueError):
        CommitBudget(bad, clock=ManualClock())


def test_report_gives_per_item_ratios() -> None:
    clock = ManualClock(0.0)
    counter = CallCounter(clock)
    counter.add("commit", 2)
    counter.add("api", 5)
    counter.add("published_items", 40)
    report = counter.report(commits_last_hour=2)
    assert report["commits_per_published_item"] == pytest.approx(2 / 40)
    assert report["api_calls_per_published_item"] == pytest.approx(5 / 40)
    assert report["api_calls_last_5min"] == 5
    clock.advance(301)
    assert counter.report(0)["api_calls_last_5min"] == 0
