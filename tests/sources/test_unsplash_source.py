"""UnsplashSource against the loopback Unsplash emulator: enumeration, quota, faults, tracking.

Time is a ``FakeClock`` shared by the emulator's hourly window and the source, and the source's
``sleep`` advances it, so hour-long waits take no real time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from emulators.faults import Fault
from emulators.unsplash import FakeClock, UnsplashEmulator
from sharp_dataset_pipeline.errors import ConfigError, RateLimited
from sharp_dataset_pipeline.records import Followup, Item
from sharp_dataset_pipeline.sources.unsplash import UnsplashOptions, UnsplashSource

KEY = "test-access-key-0123"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emu(clock: FakeClock) -> Iterator[UnsplashEmulator]:
    with UnsplashEmulator(n_photos=95, clock=clock, access_key=KEY) as server:
        yield server


def make_source(emu: UnsplashEmulator, clock: FakeClock, kind: str = "list", arg: str = "", **kw) -> UnsplashSource:
    kw.setdefault("range_size", 40)
    kw.setdefault("details", "never")
    kw.setdefault("access_key", KEY)
    client = kw.pop("client", None) or httpx.Client(timeout=kw.pop("timeout_s", 5.0))
    runtime = {k: kw.pop(k) for k in ("known_ids", "stop_requested", "governor") if k in kw}
    options = UnsplashOptions(kind, arg, api_base=emu.base_url, **kw)
    return UnsplashSource(options, clock=clock, sleep=clock.sleep, client=client, **runtime)


def all_items(source: UnsplashSource) -> list[Item]:
    return [item for unit in source.units() for item in source.items(unit)]


def track(source: UnsplashSource, items: list[Item]) -> list[Followup]:
    return source.complete_followups(
        [Followup(source.followup_kind, i.id, i.meta["download_location"]) for i in items]
    )


def oldest_offsets(emu: UnsplashEmulator) -> dict[str, int]:
    total = len(emu.feed)
    return {pid: total - 1 - n for n, pid in enumerate(emu.feed)}


# ---- enumeration -----------------------------------------------------------------------------


def test_list_units_are_oldest_offset_ranges_with_a_short_tail(emu, clock) -> None:
    source = make_source(emu, clock)
    units = list(source.units())
    assert [u.key for u in units] == ["list/oldest/000000-000039", "list/oldest/000040-000079",
                                      "list/oldest/000080-000094"]
    assert emu.counts["/photos"] == 1  # one call fixes the unit list
    items = [i for u in units for i in source.items(u)]
    assert len({i.id for i in items}) == len(items) == 95
    offsets = oldest_offsets(emu)
    assert all(offsets[i.id] == i.offset for i in items)
    assert all(units[0].start <= i.offset < units[0].stop for i in items if i.unit == units[0].key)
    assert emu.counts["/photos"] == 4  # 95 photos = 4 pages; boundary pages are read once


def test_every_photo_of_the_enumerated_units_once_while_new_photos_arrive(emu, clock) -> None:
    source = make_source(emu, clock, per_page=10, range_size=30)
    units = list(source.units())
    before = {pid: off for pid, off in oldest_offsets(emu).items()}
    emu.prepend_after_list_requests(every=1, n=4)  # 4 new photos after every page served
    seen: list[Item] = []
    for unit in units:
        seen.extend(source.items(unit))
    ids = [i.id for i in seen]
    assert len(ids) == len(set(ids)), "a photo was yielded twice"
    assert set(ids) == set(before), "a photo of the enumerated units was missed"
    assert all(before[i.id] == i.offset for i in seen)
    assert len(emu.feed) > 95  # the feed really moved
    # Units stay stable: a later enumeration names the same full units.
    later = [u.key for u in make_source(emu, clock, per_page=10, range_size=30).units()]
    assert [u.key for u in units][:3] == later[:3]


def test_photos_removed_from_the_head_are_absorbed(emu, clock) -> None:
    source = make_source(emu, clock, per_page=10, range_size=30)
    units = list(source.units())
    expected = set(oldest_offsets(emu))
    newest = list(emu.feed[:6])
    for pid in newest:
        emu.remove(pid)
    got = [i.id for u in units for i in source.items(u)]
    assert len(got) == len(set(got))
    assert set(got) == expected - set(newest)


@pytest.mark.parametrize(("kind", "arg", "route"), [("topic", "nature", "/topics/:slug/photos"),
                                                    ("user", "anna_k", "/users/:name/photos"),
                                                    ("collection", "c0ll3ct", "/collections/:id/photos")])
def test_topic_user_and_collection_feeds(emu, clock, kind, arg, route) -> None:
    source = make_source(emu, clock, kind, arg, per_page=5, range_size=7)
    units = list(source.units())
    assert units and all(u.key.startswith(f"{kind}/") and "/oldest/" in u.key for u in units)
    items = [i for u in units for i in source.items(u)]
    expected = {"topic": emu.topics, "user": emu.users, "collection": emu.collections}[kind][arg]
    assert [i.id for i in sorted(items, key=lambda i: i.offset)] == expected  # oldest first
    queries = [q for r, q in emu.requests if r == route]
    if kind != "collection":
        assert all(q.get("order_by") == "oldest" for q in queries)


def test_search_units_are_page_ranges_cut_at_the_depth_limit(clock) -> None:
    with UnsplashEmulator(n_photos=260, clock=clock, access_key=KEY, search_depth=200) as emu:
        source = make_source(emu, clock, "search", queries=["e"], per_page=1, range_size=60)
        units = list(source.units())
        assert [u.key for u in units][-1].endswith("/p181-p200")
        assert units[0].key == "search/e/relevant/cf-high/p001-p060"
        body_total = emu.requests[0][1]
        assert body_total["query"] == "e" and body_total["content_filter"] == "high"
        first = list(source.items(units[0]))
        assert [i.offset for i in first] == list(range(60))


def test_search_stops_at_an_empty_page(clock) -> None:
    with UnsplashEmulator(n_photos=120, clock=clock, access_key=KEY, search_depth=3) as emu:
        source = make_source(emu, clock, "search", queries=["e", "lake"], per_page=5, range_size=50)
        units = list(source.units())
        assert {u.key.split("/")[1] for u in units} == {"e", "lake"}
        items = list(source.items(units[0]))
        assert len(items) == 15  # pages 1-3, then page 4 is empty
        assert emu.counts["/search/photos"] == 2 + 3  # page 1 per query (kept) + pages 2, 3, 4


def test_premium_photos_are_skipped_and_counted(clock) -> None:
    with UnsplashEmulator(n_photos=40, clock=clock, access_key=KEY, premium_every=4) as emu:
        source = make_source(emu, clock)
        items = all_items(source)
        assert len(items) == 30 and source.skipped_counts() == {"unsplash_plus": 10}
        assert not any("plus.unsplash.com" in i.url for i in items)


def test_known_ids_are_neither_yielded_nor_budgeted(emu, clock) -> None:
    done = set(emu.feed[::2])
    source = make_source(emu, clock, known_ids=lambda ids: {i for i in ids if i in done})
    items = all_items(source)
    assert {i.id for i in items} == set(emu.feed) - done
    assert source.skipped_counts()["already_known"] == len(done)
    assert source.governor.snapshot(clock()).owed == len(items)


def test_items_carry_image_url_meta_and_tracking_location(emu, clock) -> None:
    source = make_source(emu, clock, details="always", app_name="demo_app")
    unit = next(iter(source.units()))
    item = next(iter(source.items(unit)))
    assert item.source == "unsplash" and item.unit == unit.key and item.ext_hint == "jpg"
    assert "w=1536" in item.url and "fit=max" in item.url and "q=90" in item.url and "ixid=" in item.url
    assert item.meta["page_url"].endswith("utm_source=demo_app&utm_medium=referral")
    assert item.meta["download_location"].startswith(f"{emu.base_url}/photos/{item.id}/download?ixid=")
    assert item.meta["tags"] and item.meta["license"] == "Unsplash License"
    with httpx.Client() as cdn:
        resp = cdn.get(item.url)
    assert resp.status_code == 200 and resp.content[:2] == b"\xff\xd8"
    assert emu.cdn_auth_headers == 0  # the key never goes to the image CDN


# ---- details --------------------------------------------------------------------------------


@pytest.mark.parametrize(("details", "limit", "calls"), [("never", 5000, 0), ("always", 50, 10),
                                                         ("auto", 50, 0), ("auto", 5000, 10)])
def test_details_are_fetched_only_when_asked_or_affordable(clock, details, limit, calls) -> None:
    with UnsplashEmulator(n_photos=10, clock=clock, access_key=KEY, limit=limit) as emu:
        source = make_source(emu, clock, details=details)
        items = all_items(source)
        assert emu.counts["/photos/:id"] == calls
        hinted = [i for i in items if i.focal_hint_mm35 > 0]
        if calls:
            cameras = {pid: emu.photos[pid]["model"] for pid in emu.feed}
            phones = [i for i in items if cameras[i.id] in ("iPhone 13 Pro", None)]
            assert hinted and all(i.focal_hint_mm35 == 0 for i in phones)
        else:
            assert not hinted


def test_a_photo_gone_before_its_details_is_skipped(emu, clock) -> None:
    emu.faults.add(Fault(status=404, body=b'{"errors":["Couldn\'t find Photo"]}'), path="/photos/:id")
    source = make_source(emu, clock, details="always")
    items = all_items(source)
    assert len(items) == 94 and source.skipped_counts() == {"gone": 1}


# ---- quota ----------------------------------------------------------------------------------


def run_like_pipeline(source: UnsplashSource, lag: int) -> tuple[list[Item], int, RateLimited | None]:
    """Take items and track them ``lag`` items later (as publish would); returns (items, tracked, stop)."""
    taken: list[Item] = []
    pending: list[Item] = []
    tracked = 0
    stop = None
    try:
        for unit in source.units():
            for item in source.items(unit):
                taken.append(item)
                pending.append(item)
                if len(pending) > lag:
                    tracked += len(track(source, pending[:1]))
                    pending = pending[1:]
    except RateLimited as exc:
        stop = exc
    tracked += len(track(source, pending))  # drain: what was taken gets published and tracked
    return taken, tracked, stop


@pytest.mark.parametrize("lag", [0, 12])
def test_a_demo_key_stops_before_the_limit_and_tracks_everything_taken(clock, lag) -> None:
    with UnsplashEmulator(n_photos=300, clock=clock, access_key=KEY, limit=50) as emu:
        source = make_source(emu, clock, range_size=60)
        taken, tracked, stop = run_like_pipeline(source, lag)
        assert stop is not None and stop.retry_after_s == pytest.approx(3600, abs=5)
        assert emu.limit_responses == 0
        assert tracked == len(taken) == sum(emu.tracked.values())
        assert emu.api_requests <= 50 and len(taken) >= 40
        assert all(n == 1 for n in emu.tracked.values())


def test_waiting_mode_sleeps_through_windows_and_finishes(clock) -> None:
    with UnsplashEmulator(n_photos=150, clock=clock, access_key=KEY, limit=50) as emu:
        source = make_source(emu, clock, range_size=60, stop_on_rate_limit=False)
        start = clock()
        taken, tracked, stop = run_like_pipeline(source, lag=5)
        assert stop is None and len(taken) == tracked == 150
        assert emu.limit_responses == 0
        assert clock() - start >= 2 * 3600  # three windows' worth of calls
        assert max(clock.slept) <= 5.0  # waits are sliced so a stop request is seen


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=403, body=b"Rate Limit Exceeded"),
        Fault(status=403, body=b'{"errors":["Rate Limit Exceeded"]}'),
        Fault(status=429, body=b"{}"),
        Fault(status=500, body=b"", headers={"X-Ratelimit-Remaining": "0"}),
    ],
)
def test_injected_rate_limits_stop_at_once_without_retrying(emu, clock, fault) -> None:
    source = make_source(emu, clock)
    units = list(source.units())
    emu.faults.add(fault, path="/photos", times=50)
    before = emu.api_requests
    with pytest.raises(RateLimited) as info:
        list(source.items(units[0]))
    assert emu.api_requests - before == 1  # no busy loop, no retry of a limit
    assert info.value.retry_after_s == pytest.approx(3600, abs=5)
    with pytest.raises(RateLimited):
        list(source.items(units[0]))  # still limited: refused without a request
    assert emu.api_requests - before == 1


def test_injected_429_in_waiting_mode_waits_for_the_window_then_goes_on(emu, clock) -> None:
    source = make_source(emu, clock, stop_on_rate_limit=False)
    units = list(source.units())
    emu.faults.add(Fault(status=429, body=b"{}", headers={"Retry-After": "60"}), path="/photos", times=2)
    items = list(source.items(units[0]))
    assert len(items) == 40
    assert emu.counts["/photos"] == 1 + 2 + 3  # units + two refused + the three pages of the unit
    assert sum(clock.slept) == pytest.approx(120, abs=1)


def test_tracking_never_waits_and_resumes_later(emu, clock) -> None:
    source = make_source(emu, clock)
    items = all_items(source)[:10]
    emu.faults.add(Fault(status=429, body=b"{}", headers={"Retry-After": "30"}), path="/photos/:id/download")
    emu.faults.add(Fault(status=0), path="/photos/:id/download")
    assert track(source, items) == []
    assert clock.slept == []
    clock.advance(31)
    done = track(source, items)
    assert len(done) == 10 and sum(emu.tracked.values()) == 10


def test_tracking_calls_only_the_api_and_settles_gone_photos(emu, clock) -> None:
    source = make_source(emu, clock)
    ok = Followup(source.followup_kind, emu.feed[0], f"{emu.base_url}/photos/{emu.feed[0]}/download?ixid=1")
    public = Followup(source.followup_kind, emu.feed[1],
                      f"https://api.unsplash.com/photos/{emu.feed[1]}/download?ixid=2")
    elsewhere = Followup(source.followup_kind, "x", "https://evil.example/photos/x/download")
    gone = Followup(source.followup_kind, "nope", f"{emu.base_url}/photos/nope/download")
    other = Followup("something_else", "y", "")
    done = source.complete_followups([ok, public, elsewhere, gone, other])
    assert done == [ok, public, elsewhere, gone]
    assert emu.tracked[emu.feed[0]] == 1 and emu.tracked[emu.feed[1]] == 1  # public URL sent to the base
    assert source.tracked == 2


# ---- errors and configuration ---------------------------------------------------------------


def test_server_errors_and_slow_answers_are_retried(emu, clock) -> None:
    emu.faults.add(Fault(status=503), Fault(status=502), path="/photos")
    source = make_source(emu, clock)
    assert len(all_items(source)) == 95
    assert emu.counts["/photos"] == 4 + 2 and len(clock.slept) == 2
    emu.faults.add(Fault(delay_s=1.5), path="/photos/:id/download")
    slow = make_source(emu, clock, timeout_s=0.5)
    item = next(iter(slow.items(next(iter(slow.units())))))
    assert len(track(slow, [item])) == 1


@pytest.mark.parametrize(("key", "fault"), [("wrong-key-SECRET99", None),
                                            (KEY, Fault(status=403, body=b'{"errors":["Forbidden"]}'))])
def test_a_refused_key_is_fatal_with_a_clear_message_and_no_key(emu, clock, caplog, key, fault) -> None:
    if fault is not None:
        emu.faults.add(fault, path="/photos")
    caplog.set_level(logging.DEBUG)
    source = make_source(emu, clock, access_key=key)
    with pytest.raises(ConfigError) as info:
        list(source.units())
    message = str(info.value)
    assert "UNSPLASH_ACCESS_KEY" in message and ("401" in message or "403" in message)
    assert key not in message and key not in caplog.text
    assert emu.api_requests == 1


def test_per_page_is_clamped_to_30_with_a_warning(emu, clock, caplog) -> None:
    caplog.set_level(logging.WARNING)
    source = make_source(emu, clock, per_page=100)
    assert source.per_page == 30 and "PER_PAGE=100" in caplog.text
    list(source.units())
    assert emu.requests[0][1]["per_page"] == "30"


@pytest.mark.parametrize(
    ("kind", "kw", "needle"),
    [("search", {"queries": []}, "UNSPLASH_QUERIES"), ("list", {"order_by": "popular"}, "UNSPLASH_ORDER_BY"),
     ("topic", {}, "SOURCE"), ("list", {"color": "pink"}, "UNSPLASH_COLOR"),
     ("list", {"details": "some"}, "UNSPLASH_DETAILS"), ("flickr", {}, "SOURCE"),
     ("list", {"access_key": ""}, "UNSPLASH_ACCESS_KEY"), ("list", {"api_base": "api.unsplash.com"}, "API_BASE")],
)
def test_bad_settings_are_config_errors(emu, clock, kind, kw, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        if "api_base" in kw:
            UnsplashSource(UnsplashOptions(kind, access_key=KEY, **kw), client=httpx.Client())
        else:
            make_source(emu, clock, kind, **kw)


def test_a_stop_request_ends_a_rate_limit_wait(emu, clock) -> None:
    source = make_source(emu, clock, stop_on_rate_limit=False)
    units = list(source.units())
    emu.faults.add(Fault(status=429, body=b"{}"), path="/photos", times=5)
    answers = iter([False, False, False])  # then True: the stop arrives during the wait
    source.set_stop_requested(lambda: next(answers, True))
    with pytest.raises(RateLimited, match="stopped while waiting"):
        list(source.items(units[0]))
    assert sum(clock.slept) < 60  # gave up within a few slices instead of sleeping the hour
