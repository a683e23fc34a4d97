"""The quota governor, driven by hand: learn limits from headers, keep the tracking reserve, stop
before the limit, reopen with the window, and never take pacing for a limit."""

from __future__ import annotations

import pytest

from sharp_dataset_pipeline.sources.unsplash_quota import ORDINARY, TRACK, UnsplashQuota

T0 = 1_000_000.0


def answered(q: UnsplashQuota, now: float, remaining: int, limit: int = 50) -> None:
    q.record(now, limit=limit, remaining=remaining)


def test_first_call_goes_and_a_second_waits_briefly_until_the_limit_is_known() -> None:
    q = UnsplashQuota()
    assert q.request(ORDINARY, T0).granted
    second = q.request(ORDINARY, T0)
    assert not second.granted and not second.exhausted and second.wait_s < 1
    answered(q, T0, 49)
    assert q.request(ORDINARY, T0).granted
    assert q.limit == 50


def test_ordinary_calls_stop_at_the_margin_and_never_reach_zero() -> None:
    q = UnsplashQuota(margin=2)
    sent, server_left, now = 0, 50, T0
    while True:
        decision = q.request(ORDINARY, now)
        if not decision.granted:
            break
        server_left -= 1
        sent += 1
        answered(q, now, server_left)
        now += 1
    assert decision.exhausted and server_left == 2 and sent == 48
    assert decision.reopens_at == pytest.approx(T0 + 3600)
    assert q.snapshot(now).limit_responses == 0


def test_reserved_tracking_calls_hold_budget_that_listing_cannot_take() -> None:
    q = UnsplashQuota(margin=2)
    assert q.request(ORDINARY, T0).granted
    answered(q, T0, 20)
    for i in range(18):
        assert q.reserve_item(f"p{i}", T0).granted
    # 20 left = 18 owed + margin 2: no more photos, and no listing call either.
    assert q.reserve_item("p18", T0).exhausted
    blocked = q.request(ORDINARY, T0)
    assert blocked.exhausted and blocked.reopens_at == pytest.approx(T0 + 3600)
    # Tracking still goes: it spends the reserve.
    for i in range(18):
        assert q.request(TRACK, T0).granted
        answered(q, T0, 19 - i)
        q.release_item(f"p{i}")
    assert q.snapshot(T0).remaining == 2 and q.snapshot(T0).owed == 0
    assert q.snapshot(T0).limit_responses == 0


def test_remaining_zero_blocks_everything_until_the_window_reopens() -> None:
    q = UnsplashQuota()
    assert q.request(TRACK, T0).granted
    answered(q, T0 + 5, 0)
    d = q.request(TRACK, T0 + 10)
    assert d.exhausted and d.reopens_at == pytest.approx(T0 + 3600)
    assert q.request(TRACK, T0 + 3600).granted  # a probe of the new window
    assert not q.request(TRACK, T0 + 3600).granted  # one at a time until it is answered
    answered(q, T0 + 3601, 49)
    assert q.request(ORDINARY, T0 + 3601).granted


@pytest.mark.parametrize(("retry_after", "reopen"), [(None, T0 + 3600), (120.0, T0 + 100 + 120)])
def test_a_rate_limit_response_blocks_until_window_end_or_retry_after(retry_after, reopen) -> None:
    q = UnsplashQuota()
    assert q.request(ORDINARY, T0).granted
    answered(q, T0, 30)
    assert q.request(ORDINARY, T0 + 100).granted
    q.record(T0 + 100, limit=None, remaining=None, rate_limited=True, retry_after_s=retry_after)
    d = q.request(TRACK, T0 + 101)
    assert d.exhausted and d.reopens_at == pytest.approx(reopen)
    assert q.snapshot(T0 + 101).limit_responses == 1
    assert q.request(ORDINARY, reopen).granted


def test_pacing_is_a_short_wait_not_a_limit() -> None:
    q = UnsplashQuota(min_interval_s=2.0)
    assert q.request(ORDINARY, T0).granted
    answered(q, T0, 4000, limit=5000)
    d = q.request(ORDINARY, T0 + 0.5)
    assert not d.granted and not d.exhausted and d.wait_s == pytest.approx(1.5)
    assert q.request(ORDINARY, T0 + 2.0).granted


def test_reservations_lapse_after_their_ttl() -> None:
    q = UnsplashQuota(margin=0, owed_ttl_s=600)
    assert q.request(ORDINARY, T0).granted
    answered(q, T0, 3)
    assert q.reserve_item("a", T0).granted and q.reserve_item("b", T0).granted
    assert q.reserve_item("a", T0).granted  # same photo again: no second reservation
    assert q.snapshot(T0).owed == 2
    assert q.request(ORDINARY, T0).granted
    answered(q, T0, 2)
    assert q.request(ORDINARY, T0 + 1).exhausted
    assert q.request(ORDINARY, T0 + 601).granted


def test_a_server_count_that_goes_up_starts_a_new_window() -> None:
    q = UnsplashQuota()
    assert q.request(ORDINARY, T0).granted
    answered(q, T0, 10)
    assert q.request(ORDINARY, T0 + 1800).granted
    answered(q, T0 + 1800, 49)  # the server's window reset before our estimate
    snap = q.snapshot(T0 + 1800)
    assert snap.remaining == 49 and snap.window_start == T0 + 1800


def test_calls_in_flight_are_subtracted_from_the_header() -> None:
    q = UnsplashQuota()
    assert q.request(ORDINARY, T0).granted
    answered(q, T0, 40)
    assert q.request(ORDINARY, T0).granted and q.request(ORDINARY, T0).granted
    answered(q, T0, 39)  # counts the first of the two; the other is still in flight
    assert q.snapshot(T0).remaining == 38
    q.record_no_answer()
    assert q.snapshot(T0).in_flight == 0


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        UnsplashQuota(window_s=0)


def test_after_a_window_reopens_reservations_are_bounded_by_the_learned_limit() -> None:
    q = UnsplashQuota(margin=2, owed_ttl_s=10_000)
    assert q.request(ORDINARY, T0).granted
    answered(q, T0, 0, limit=10)
    assert q.reserve_item("a", T0 + 1).exhausted
    later = T0 + 3600
    granted = [q.reserve_item(f"p{i}", later).granted for i in range(12)]
    assert granted == [True] * 8 + [False] * 4  # 10 learned - margin 2
