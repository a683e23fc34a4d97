"""Pure paging arithmetic: unit ranges and keys, search pages, and the drift-safe latest-first cursor."""

from __future__ import annotations

import random

import pytest

from sharp_dataset_pipeline.sources import paging


@pytest.mark.parametrize(
    ("asked", "expected"), [(10, (10, False)), (30, (30, False)), (31, (30, True)), (100, (30, True)), (0, (1, True))]
)
def test_clamp_per_page(asked: int, expected: tuple[int, bool]) -> None:
    assert paging.clamp_per_page(asked) == expected


@pytest.mark.parametrize(
    ("total", "size", "expected"),
    [
        (95, 40, [(0, 40), (40, 80), (80, 95)]),
        (80, 40, [(0, 40), (40, 80)]),
        (0, 40, []),
        (5, 300, [(0, 5)]),
    ],
)
def test_unit_ranges(total: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert paging.unit_ranges(total, size) == expected


def test_offset_unit_keys_name_inclusive_last_offset() -> None:
    assert paging.offset_unit_key("list/oldest", 300, 600) == "list/oldest/000300-000599"
    assert paging.offset_unit_key("list/oldest", 600, 611) == "list/oldest/000600-000610"


def test_search_unit_pages_are_cut_at_the_depth_limit() -> None:
    assert paging.search_unit_pages(25, 300, 30) == [(1, 10), (11, 20), (21, 25)]
    pages = paging.search_unit_pages(5000, 300, 30)
    assert pages[-1] == (191, 200) and len(pages) == 20
    assert paging.search_unit_pages(0, 300, 30) == []
    # A range smaller than a page still gives whole pages.
    assert paging.search_unit_pages(3, 10, 30) == [(1, 1), (2, 2), (3, 3)]
    assert paging.search_unit_key("search/x/relevant", 11, 20) == "search/x/relevant/p011-p020"


def test_key_slug_is_readable_and_never_merges_different_queries() -> None:
    assert paging.key_slug("mountain") == "mountain"
    a, b, c = paging.key_slug("new york"), paging.key_slug("new-york"), paging.key_slug("New York")
    assert a.startswith("new-york-") and b == "new-york" and len({a, b, c}) == 3
    assert "/" not in paging.key_slug("a/b c") and paging.key_slug("東京").startswith("x-")


def test_oldest_first_pages_cover_the_range() -> None:
    assert paging.oldest_first_pages(0, 40, 30) == [1, 2]
    assert paging.oldest_first_pages(40, 80, 30) == [2, 3]
    assert paging.oldest_first_pages(60, 90, 30) == [3]
    assert paging.oldest_first_pages(5, 5, 30) == []


def test_latest_first_offsets_round_trip() -> None:
    total, per_page = 95, 30
    for offset in range(total):
        page = paging.latest_first_page(total, offset, per_page)
        index = (total - 1 - offset) - (page - 1) * per_page
        assert 0 <= index < per_page
        assert paging.latest_first_offset(total, page, per_page, index) == offset


class Feed:
    """A latest-first feed; photo ``n`` is the n-th photo ever made, so with only additions at the
    head its oldest-offset is ``n`` forever."""

    def __init__(self, n: int) -> None:
        self.ids = list(range(n - 1, -1, -1))
        self.next_id = n

    def prepend(self, k: int) -> None:
        self.ids[:0] = list(range(self.next_id + k - 1, self.next_id - 1, -1))
        self.next_id += k

    def page(self, page: int, per_page: int) -> tuple[list[int], int]:
        return self.ids[(page - 1) * per_page: page * per_page], len(self.ids)


def read_unit(feed: Feed, start: int, stop: int, per_page: int, hint: int, mutate, max_rereads: int = 5):
    cursor = paging.LatestFirstCursor(start, stop, per_page, hint, max_rereads)
    got: list[int] = []
    while (page := cursor.next_page()) is not None:
        mutate(feed)
        ids, total = feed.page(page, per_page)
        read = cursor.accept(page, total, len(ids))
        for index, offset in read.in_range:
            assert feed.ids[(page - 1) * per_page + index] == ids[index]
            got.append(ids[index])
            assert len(feed.ids) - 1 - ((page - 1) * per_page + index) == offset
    return got, cursor


@pytest.mark.parametrize("seed", range(12))
def test_cursor_reads_every_photo_of_the_unit_once_while_photos_are_prepended(seed: int) -> None:
    rng = random.Random(seed)
    feed = Feed(500)
    hint = len(feed.ids)
    for start in range(0, 480, 60):
        got, _ = read_unit(feed, start, start + 60, 30, hint, lambda f: f.prepend(rng.randint(0, 25)))
        assert sorted(set(got)) == list(range(start, start + 60))


def test_cursor_recovers_when_photos_vanish_from_the_head() -> None:
    feed = Feed(300)
    drops = iter([5, 0, 12, 0, 3, 0, 0, 0])

    def remove_newest(f: Feed) -> None:
        n = next(drops, 0)
        del f.ids[:n]  # the newest photos disappear: older ones slide towards page 1

    got, cursor = read_unit(feed, 100, 190, 30, len(feed.ids), remove_newest)
    assert set(got) == set(range(100, 190))
    assert cursor.rereads >= 1


def test_stale_hint_costs_a_reread_not_a_photo() -> None:
    feed = Feed(200)
    hint = len(feed.ids)
    feed.prepend(45)  # the unit list was made before these arrived
    got, cursor = read_unit(feed, 0, 60, 30, hint, lambda f: None)
    assert sorted(set(got)) == list(range(60))
    assert cursor.rereads == 1


def test_cursor_stops_when_the_feed_will_not_hold_still() -> None:
    feed = Feed(200)
    with pytest.raises(paging.DriftError):
        read_unit(feed, 0, 60, 30, len(feed.ids), lambda f: f.prepend(90), max_rereads=3)


def test_cursor_handles_a_short_tail_and_an_empty_feed() -> None:
    feed = Feed(95)
    got, _ = read_unit(feed, 80, 95, 30, 95, lambda f: None)
    assert sorted(got) == list(range(80, 95))
    cursor = paging.LatestFirstCursor(0, 10, 30, 0, 2)
    assert cursor.next_page() is None


class OverstatedFeed(Feed):
    """A feed whose total says ``extra`` more photos than its pages list (its last page is short or empty)."""

    def __init__(self, n: int, extra: int) -> None:
        super().__init__(n)
        self.extra, self.reads = extra, 0

    def page(self, page: int, per_page: int) -> tuple[list[int], int]:
        self.reads += 1
        return self.ids[(page - 1) * per_page: page * per_page], len(self.ids) + self.extra


@pytest.mark.parametrize(("n", "extra"), [(90, 10), (95, 5), (90, 45)])
def test_a_total_that_overstates_the_listing_ends_the_unit_instead_of_looping(n: int, extra: int) -> None:
    feed = OverstatedFeed(n, extra)
    cursor = paging.LatestFirstCursor(0, 60, 30, n + extra, max_rereads=3)
    got: list[int] = []
    while (page := cursor.next_page()) is not None:
        ids, total = feed.page(page, 30)
        got += [ids[i] for i, _ in cursor.accept(page, total, len(ids)).in_range]
    # Offsets come from the stated total, so every listed photo whose offset falls in 0-59 is read once.
    assert sorted(set(got)) == [pid for pid in range(n) if pid + extra < 60]
    assert cursor.unlisted == extra and cursor.done
    planned = len({(n + extra - 1 - off) // 30 + 1 for off in range(60)})  # the unit's pages, per the total
    assert feed.reads <= planned + 1  # one re-read of the short page confirms where the listing ends
