"""Pure paging arithmetic for API feeds: unit keys, oldest-offset <-> pages, drift-safe reading.

A latest-first feed (Unsplash ``GET /photos``, collections) moves under the reader: every new
photo pushes the others one position further from the head. A photo's stable position is its
*oldest-offset*, ``total - 1 - position_from_newest``; units are ranges of that offset. Each page
response carries the feed's total at the moment it was served, so the offsets of the photos on
that page are exact for that page. ``LatestFirstCursor`` walks a unit from its newest offset to
its oldest one, recomputing which page holds the next offset it still needs from the freshest
total, so photos prepended (or removed) while the unit is read are neither skipped nor lost.

Oldest-first feeds (topics and users with ``order_by=oldest``) are append-only: offset and page
are fixed. Search units are page ranges of one query (search depth ends near page 200).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .base import unit_key

MAX_PER_PAGE = 30
SEARCH_MAX_PAGE = 200


def clamp_per_page(per_page: int) -> tuple[int, bool]:
    """``per_page`` limited to the API's 1..30 and whether it had to be changed."""
    clamped = min(max(int(per_page), 1), MAX_PER_PAGE)
    return clamped, clamped != per_page


def unit_ranges(total: int, range_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` offset ranges of ``range_size`` covering ``total`` items, oldest first.

    The last range is cut at ``total`` when the feed does not fill it: its key then names its
    real last offset, so a later, longer feed gives that tail a new key instead of reusing the
    key of a unit already marked done with fewer photos in it.
    """
    if range_size < 1:
        raise ValueError("range_size must be >= 1")
    return [(start, min(start + range_size, total)) for start in range(0, max(total, 0), range_size)]


def offset_unit_key(prefix: str, start: int, stop: int) -> str:
    """``prefix/000300-000599`` (inclusive last offset), the key of an offset range."""
    return unit_key(prefix, start, stop)


def pages_per_unit(range_size: int, per_page: int) -> int:
    """How many search pages make one unit (at least one)."""
    return max(1, -(-range_size // per_page))


def search_unit_pages(
    total_pages: int, range_size: int, per_page: int, max_page: int = SEARCH_MAX_PAGE
) -> list[tuple[int, int]]:
    """Inclusive ``(first_page, last_page)`` ranges of one query, cut at the search depth limit."""
    last = min(max(total_pages, 0), max_page)
    step = pages_per_unit(range_size, per_page)
    return [(first, min(first + step - 1, last)) for first in range(1, last + 1, step)]


def search_unit_key(prefix: str, first_page: int, last_page: int) -> str:
    """``prefix/p011-p020``: a search unit named by its (inclusive) page range."""
    return f"{prefix}/p{first_page:03d}-p{last_page:03d}"


def key_slug(text: str) -> str:
    """A path-safe, readable form of free text for unit keys.

    Lowercase letters, digits and single dashes; when that loses information (case, spaces,
    punctuation, other scripts) a short hash of the exact text is appended, so two different
    queries never share a key.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "x"
    if slug == text:
        return slug
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]
    return f"{slug}-{digest}"


def oldest_first_pages(start: int, stop: int, per_page: int) -> list[int]:
    """1-based pages of an oldest-first feed that hold the offsets ``[start, stop)``."""
    if stop <= start:
        return []
    return list(range(start // per_page + 1, (stop - 1) // per_page + 2))


def oldest_first_offset(page: int, per_page: int, index: int) -> int:
    """Offset of the ``index``-th photo on 1-based ``page`` of an oldest-first feed."""
    return (page - 1) * per_page + index


def latest_first_offset(total: int, page: int, per_page: int, index: int) -> int:
    """Oldest-offset of the ``index``-th photo on ``page`` of a latest-first feed of ``total``."""
    return total - 1 - ((page - 1) * per_page + index)


def latest_first_page(total: int, offset: int, per_page: int) -> int:
    """The 1-based page that holds oldest-offset ``offset`` while the feed has ``total`` photos."""
    return (total - 1 - offset) // per_page + 1


@dataclass
class PageRead:
    """What one page contributed: the in-range (index on page, offset) pairs, newest first."""

    in_range: list[tuple[int, int]]
    advanced: bool


class DriftError(Exception):
    """The feed kept moving under a unit for more re-reads than allowed."""


class LatestFirstCursor:
    """Reads the oldest-offsets ``[start, stop)`` of a latest-first feed, drift-safe.

    Usage: ``while (page := cursor.next_page()) is not None: read it; cursor.accept(page,
    total_of_that_response, count_on_page)``. ``need`` is the highest offset of the unit not yet
    covered; it only goes down. A page whose newest photo is older than ``need`` means photos
    were removed near the head since the plan was made (the ones we need slid to an earlier
    page): the cursor asks for the right page again instead of skipping them. New photos at the
    head make a page start newer than planned; the surplus is simply out of range. Each read
    that does not lower ``need`` counts as a re-read; more than ``max_rereads`` raises
    ``DriftError`` so a unit cannot loop on a feed that will not hold still.

    A feed whose total overstates what it lists (a short or empty last page while the total says
    older photos exist) is not drift: once a re-read of that page answers the same, the listing
    ends there and the unit is covered; ``unlisted`` counts the offsets the total promised but no
    page lists.
    """

    def __init__(self, start: int, stop: int, per_page: int, total_hint: int, max_rereads: int) -> None:
        if per_page < 1:
            raise ValueError("per_page must be >= 1")
        self.start, self.stop, self.per_page = start, stop, per_page
        self.total = total_hint
        self.need = min(stop, total_hint) - 1
        self.max_rereads = max_rereads
        self.rereads = 0
        self.unlisted = 0
        self._short_seen: tuple[int, int, int] | None = None  # (page, total, count) of a short page

    @property
    def done(self) -> bool:
        return self.need < self.start

    def next_page(self) -> int | None:
        """The page to read next (per the freshest total seen), or None when the unit is covered."""
        if self.done or self.total <= 0:
            return None
        self.need = min(self.need, self.total - 1)
        if self.done:
            return None
        return latest_first_page(self.total, self.need, self.per_page)

    def accept(self, page: int, total: int, count: int) -> PageRead:
        """Record page ``page`` as served with feed size ``total`` and ``count`` photos on it."""
        self.total = total
        # The listing ends on a short page: offsets below ``total - listed`` are on no page.
        unlisted = total - ((page - 1) * self.per_page + count) if count < self.per_page else 0
        if unlisted > 0 and self.need >= self.start:
            confirmed = self._short_seen == (page, total, count)
            self._short_seen = (page, total, count)
            if confirmed:
                self.unlisted = unlisted
                in_range = self._in_range(page, total, count)
                self.need = self.start - 1
                return PageRead(in_range, True)
        if count <= 0:
            # Past the oldest end: nothing at or below ``need`` exists any more.
            advanced = (page - 1) * self.per_page >= total
            if advanced:
                self.need = self.start - 1
            return self._finish(PageRead([], advanced))
        newest = latest_first_offset(total, page, self.per_page, 0)
        oldest = latest_first_offset(total, page, self.per_page, count - 1)
        in_range = self._in_range(page, total, count)
        advanced = newest >= self.need and oldest <= self.need
        if advanced:
            self.need = oldest - 1
        return self._finish(PageRead(in_range, advanced))

    def _in_range(self, page: int, total: int, count: int) -> list[tuple[int, int]]:
        offsets = [(i, latest_first_offset(total, page, self.per_page, i)) for i in range(count)]
        return [(i, off) for i, off in offsets if self.start <= off < self.stop]

    def _finish(self, read: PageRead) -> PageRead:
        if not read.advanced:
            self.rereads += 1
            if self.rereads > self.max_rereads:
                raise DriftError(
                    f"feed moved during {self.rereads} reads of offsets {self.start}-{self.stop - 1}"
                )
        return read
