"""The Unsplash source: feeds cut into stable units, governed API use, download tracking.

Feeds and their units (keys are stable across runs and machines):

- ``list``: the editorial feed ``GET /photos`` (latest-first only). Units are ranges of the
  *oldest-offset* (``list/oldest/000300-000599``), read drift-safe (see ``paging.py``).
- ``topic:SLUG`` / ``user:NAME``: ``order_by=oldest`` feeds, append-only, offsets as served
  (``topic/<slug>/oldest/000000-000299``).
- ``collection:ID``: served latest-first, so read like ``list`` (``collection/<id>/oldest/...``).
- ``search``: one enumeration per query, units are page ranges
  (``search/<query>/<order>/cf-high/p001-p010``), cut at the search depth limit (page 200).

``units()`` costs one API call per feed (per query for search): it reads page 1, whose
``X-Total`` (or ``total_pages``) fixes the unit list, and keeps that page for the unit that needs
it. Units come oldest first; the runner skips done ones through the ledger without any API call,
which is all ``LIST_AUTO_SEEK`` needs (start at the first unit not done). The last unit of an
offset feed may be short; its key names its real last offset. Reading a latest-first unit may
re-read a page when the feed moved under it; ``LIST_SEEK_BACK_PAGES`` (+1) bounds those re-reads
per unit, after which the unit fails with a ``TransientError`` and is retried on a later run.

Quota: every call goes through the governor (``unsplash_quota.py``). Before a photo is yielded,
its download-tracking call is reserved; when the hourly budget is spent the source raises
``RateLimited`` (``STOP_ON_RATE_LIMIT=1``) or sleeps until the window reopens. Tracking itself
(``complete_followups``) never sleeps on a limit: what cannot be tracked now stays pending.

Details (``GET /photos/:id``, which doubles the API cost of a photo) carry ``exif`` (the focal
hint) and tags: ``details="always"`` fetches them for every photo, ``"never"`` never, and
``"auto"`` only on a production key (``X-Ratelimit-Limit`` >= 1000/h), where they cost a small
share of the budget; on a demo key they would halve the photos per hour.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import ConfigError, PermanentError, RateLimited, TransientError
from ..net import make_client
from ..records import Followup, Item, SkippedInput, Unit
from . import paging
from .unsplash_api import DEFAULT_API_BASE, SERVICE, ApiResponse, UnsplashApi
from .unsplash_meta import focal_hint_mm35, has_details, image_url, is_premium, photo_meta
from .unsplash_quota import ORDINARY, PRODUCTION_LIMIT, TRACK, UnsplashQuota

logger = logging.getLogger(__name__)

KINDS = ("search", "list", "topic", "user", "collection")
ORDERS = ("relevant", "latest", "editorial")
CONTENT_FILTERS = ("low", "high")
ORIENTATIONS = ("", "landscape", "portrait", "squarish")
COLORS = ("", "black_and_white", "black", "white", "yellow", "orange", "red", "purple", "magenta",
          "green", "teal", "blue")
DETAILS = ("auto", "always", "never")
_CACHED_PAGES = 4


@dataclass(frozen=True)
class ImageParams:
    """imgix parameters for the downloaded image. Default: long side 1536 px (SHARP's internal
    resolution; ``fit=max`` never upscales), JPEG quality 90: a few hundred kB instead of a
    20+ MP original, with no visible loss at the size the model sees."""

    width: int = 1536
    height: int = 0
    quality: int = 90
    fmt: str = "jpg"


@dataclass(frozen=True)
class UnsplashOptions:
    """What one Unsplash source reads and how (built once from the settings by the factory)."""

    kind: str
    arg: str = ""
    access_key: str = field(default="", repr=False)  # a secret: never in a repr or a log line
    app_name: str = "sharp_dataset"
    api_base: str = DEFAULT_API_BASE
    range_size: int = 300
    per_page: int = 30
    queries: tuple[str, ...] = ()
    order_by: str = "relevant"
    content_filter: str = "high"
    orientation: str = ""
    color: str = ""
    details: str = "auto"
    list_seek_back_pages: int = 2
    image: ImageParams = ImageParams()
    stop_on_rate_limit: bool = True
    api_attempts: int = 4


@dataclass(frozen=True)
class _Feed:
    path: str
    params: tuple[tuple[str, str], ...]
    prefix: str
    latest_first: bool
    search: bool = False


@dataclass
class _Plan:
    feed: _Feed
    total_hint: int = 0
    first_page: int = 0
    last_page: int = 0


class UnsplashSource:
    """Unsplash feeds as a ``Source`` (see module doc); also the download-tracking followup."""

    name = "unsplash"
    followup_kind = "unsplash_download"

    def __init__(
        self,
        options: UnsplashOptions,
        *,
        governor: UnsplashQuota | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
        stop_requested: Callable[[], bool] | None = None,
        known_ids: Callable[[list[str]], set[str]] | None = None,
    ) -> None:
        o = options
        _validate(o.kind, o.arg, o.order_by, o.content_filter, o.orientation, o.color, o.details, o.range_size)
        self.kind, self.arg, self.range_size = o.kind, o.arg, o.range_size
        self.per_page = self._clamp(o.per_page)
        self.queries = [q.strip() for q in o.queries if q.strip()]
        if o.kind == "search" and not self.queries:
            raise ConfigError("UNSPLASH_QUERIES: search needs at least one query")
        self.order_by, self.content_filter = o.order_by, o.content_filter
        self.orientation, self.color, self.details = o.orientation, o.color, o.details
        self.max_rereads = max(1, o.list_seek_back_pages + 1)
        self.image = o.image
        self.app_name = o.app_name
        self.governor = governor or UnsplashQuota()
        self._own_client = client is None
        self.client = client or make_client()
        self.clock = clock
        self.stop_on_rate_limit = o.stop_on_rate_limit
        self.stop_requested = stop_requested or (lambda: False)
        self.known_ids = known_ids
        self.api = UnsplashApi(
            access_key=o.access_key, api_base=o.api_base, app_name=o.app_name, governor=self.governor,
            client=self.client, clock=clock, sleep=sleep, stop_on_rate_limit=o.stop_on_rate_limit,
            stop_requested=self.stop_requested, attempts=o.api_attempts,
        )
        self._plans: dict[str, _Plan] = {}
        self._cache: OrderedDict[tuple[str, int], ApiResponse] = OrderedDict()
        self._skipped: dict[str, int] = {}
        self.tracked = 0
        self._feed_total: int | None = None

    # ---- Source protocol -----------------------------------------------------------------
    def units(self) -> Iterator[Unit]:
        """Units in a fixed order: oldest offsets first; for search, query by query."""
        if self.kind == "search":
            for query in self.queries:
                yield from self._search_units(self._search_feed(query))
        else:
            yield from self._feed_units(self._feed())

    def items(self, unit: Unit) -> Iterator[Item]:
        """The unit's photos (each id once), Unsplash+ and already-known ids left out."""
        plan = self._plans.get(unit.key)
        if plan is None:
            raise ValueError(f"unit {unit.key!r} was not listed by this source's units()")
        if plan.feed.search:
            yield from self._search_items(unit, plan)
        elif plan.feed.latest_first:
            yield from self._latest_first_items(unit, plan)
        else:
            yield from self._oldest_first_items(unit, plan)

    def total_items(self) -> int | None:
        """The feed's ``X-Total`` once ``units()`` has read it; None for search (query by query)."""
        return self._feed_total

    def skipped_counts(self) -> dict[str, int]:
        return dict(self._skipped)

    def set_known_ids(self, known_ids: Callable[[list[str]], set[str]] | None) -> None:
        """Ids the ledger already settled are then neither yielded nor budgeted for tracking."""
        self.known_ids = known_ids

    def set_wait_hook(self, hook: Callable[[], None]) -> None:
        """``hook`` runs before every wait for the hourly window: photos already yielded must not
        sit unprocessed in the consumer for an hour (invariant 7)."""
        self.api.before_wait = hook

    def set_skip_hook(self, hook: Callable[[SkippedInput], None]) -> None:
        """Never used: a photo id the feed repeats is the same photo, not a duplicate of another."""

    def set_stop_requested(self, stop_requested: Callable[[], bool]) -> None:
        """While waiting for a rate-limit window, check this and give up (``RateLimited``) when True."""
        self.stop_requested = stop_requested
        self.api.stop_requested = stop_requested

    def release_items(self, item_ids: Iterable[str]) -> None:
        """Photos that will not be published (failed, dropped): free their tracking reservation."""
        for item_id in item_ids:
            self.governor.release_item(item_id)

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    # ---- download tracking ---------------------------------------------------------------
    def complete_followups(self, followups: list[Followup]) -> list[Followup]:
        """Call each photo's ``download_location`` once; return the followups now settled.

        Settled = tracked, or impossible for good (the photo is gone: 404/410, or the payload is
        not an Unsplash tracking URL, which would leak the key elsewhere). A rate limit, a
        transient error or a refused key ends the pass early; the rest stays pending for a later
        call. Never sleeps on a rate limit.
        """
        done: list[Followup] = []
        for followup in followups:
            if followup.kind != self.followup_kind:
                continue
            url = self._tracking_url(followup.payload)
            if url is None:
                logger.warning("photo %s: not an Unsplash tracking URL; not called", followup.item_id)
            else:
                try:
                    self.api.get(url, kind=TRACK, item_id=followup.item_id, wait=False)
                    self.tracked += 1
                except PermanentError as exc:
                    logger.warning("download tracking for photo %s: %s", followup.item_id, exc)
                except RateLimited as exc:
                    logger.info("download tracking paused for %.0f s: %s", exc.retry_after_s, exc)
                    break
                except (TransientError, ConfigError) as exc:
                    logger.warning("download tracking for photo %s failed: %s", followup.item_id, exc)
                    break
            self.governor.release_item(followup.item_id)
            done.append(followup)
        return done

    def _tracking_url(self, payload: str) -> str | None:
        parts = urlsplit(payload or "")
        path = parts.path.rstrip("/")
        if not (path.startswith("/photos/") and path.endswith("/download")):
            return None
        if self.api.same_origin(payload):
            return payload
        if parts.scheme == "https" and parts.netloc.lower() == "api.unsplash.com":
            # The photo JSON names the public API; a configured proxy or mirror gets the same path.
            query = f"?{parts.query}" if parts.query else ""
            return f"{self.api.api_base}{parts.path}{query}"
        return None

    # ---- feeds and units -----------------------------------------------------------------
    def _feed(self) -> _Feed:
        suffix = f"-{self.orientation}" if self.orientation else ""
        extra = (("orientation", self.orientation),) if self.orientation else ()
        slug = paging.key_slug(self.arg)
        if self.kind == "list":
            return _Feed("/photos", (), "list/oldest", latest_first=True)
        if self.kind == "collection":
            return _Feed(f"/collections/{self.arg}/photos", extra, f"collection/{slug}/oldest{suffix}", True)
        base = "/topics" if self.kind == "topic" else "/users"
        return _Feed(f"{base}/{self.arg}/photos", (("order_by", "oldest"), *extra),
                     f"{self.kind}/{slug}/oldest{suffix}", latest_first=False)

    def _search_feed(self, query: str) -> _Feed:
        params = [("query", query), ("order_by", self.order_by), ("content_filter", self.content_filter)]
        filters = f"cf-{self.content_filter}"
        if self.orientation:
            params.append(("orientation", self.orientation))
            filters += f"-or-{self.orientation}"
        if self.color:
            params.append(("color", self.color))
            filters += f"-c-{self.color}"
        prefix = f"search/{paging.key_slug(query)}/{self.order_by}/{filters}"
        return _Feed("/search/photos", tuple(params), prefix, latest_first=False, search=True)

    def _feed_units(self, feed: _Feed) -> Iterator[Unit]:
        first = self._get_page(feed, 1, fresh=True)
        total = self._total(first, feed)
        self._feed_total = total
        for start, stop in paging.unit_ranges(total, self.range_size):
            key = paging.offset_unit_key(feed.prefix, start, stop)
            self._plans[key] = _Plan(feed, total_hint=total)
            yield Unit(key, start, stop)

    def _search_units(self, feed: _Feed) -> Iterator[Unit]:
        first = self._get_page(feed, 1, fresh=True)
        total_pages = int((first.data or {}).get("total_pages") or 0) if isinstance(first.data, dict) else 0
        for a, b in paging.search_unit_pages(total_pages, self.range_size, self.per_page):
            key = paging.search_unit_key(feed.prefix, a, b)
            self._plans[key] = _Plan(feed, first_page=a, last_page=b)
            yield Unit(key, (a - 1) * self.per_page, b * self.per_page)

    def _total(self, resp: ApiResponse, feed: _Feed) -> int:
        if resp.total is None:
            raise TransientError(f"{SERVICE}: {feed.path} answered without X-Total; cannot place photos")
        return resp.total

    def _get_page(self, feed: _Feed, page: int, *, fresh: bool = False) -> ApiResponse:
        """One page, from the small cache of recent pages unless ``fresh``.

        A cached page is a consistent snapshot (photos plus the total they were served with), so
        the offsets derived from it stay right later; neighbouring units share their boundary
        page, and the cache saves reading it twice. Re-reads after drift always go to the API.
        """
        key = (feed.prefix, page)
        cached = None if fresh else self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        params = dict(feed.params)
        params.update(page=str(page), per_page=str(self.per_page))
        resp = self.api.get(feed.path, params)
        if resp.per_page is not None and resp.per_page != self.per_page:
            raise TransientError(
                f"{SERVICE}: server pages hold {resp.per_page} photos, not PER_PAGE={self.per_page}"
            )
        self._cache[key] = resp
        while len(self._cache) > _CACHED_PAGES:
            self._cache.popitem(last=False)
        return resp

    # ---- reading units -------------------------------------------------------------------
    def _latest_first_items(self, unit: Unit, plan: _Plan) -> Iterator[Item]:
        cursor = paging.LatestFirstCursor(
            unit.start, unit.stop, self.per_page, plan.total_hint, self.max_rereads
        )
        seen: set[str] = set()
        pages_read: set[int] = set()
        while (page := cursor.next_page()) is not None:
            resp = self._get_page(plan.feed, page, fresh=page in pages_read)
            pages_read.add(page)
            photos = _photo_list(resp.data)
            try:
                read = cursor.accept(page, self._total(resp, plan.feed), len(photos))
            except paging.DriftError as exc:
                raise TransientError(f"{SERVICE}: unit {unit.key}: {exc}") from None
            yield from self._emit(unit, [(photos[i], off) for i, off in read.in_range], seen)
        if cursor.unlisted:
            logger.warning("%s: unit %s: the feed lists %d photos fewer than its X-Total says; the unit ends at "
                           "its oldest listed photo", SERVICE, unit.key, cursor.unlisted)

    def _oldest_first_items(self, unit: Unit, plan: _Plan) -> Iterator[Item]:
        seen: set[str] = set()
        for page in paging.oldest_first_pages(unit.start, unit.stop, self.per_page):
            photos = _photo_list(self._get_page(plan.feed, page).data)
            batch = [(p, paging.oldest_first_offset(page, self.per_page, i)) for i, p in enumerate(photos)]
            yield from self._emit(unit, [(p, o) for p, o in batch if unit.start <= o < unit.stop], seen)
            if len(photos) < self.per_page:
                return

    def _search_items(self, unit: Unit, plan: _Plan) -> Iterator[Item]:
        seen: set[str] = set()
        for page in range(plan.first_page, plan.last_page + 1):
            resp = self._get_page(plan.feed, page)
            results = _photo_list((resp.data or {}).get("results") if isinstance(resp.data, dict) else None)
            offsets = [paging.oldest_first_offset(page, self.per_page, i) for i in range(len(results))]
            yield from self._emit(unit, list(zip(results, offsets, strict=True)), seen)
            if len(results) < self.per_page:
                return

    def _emit(self, unit: Unit, batch: list[tuple[dict[str, Any], int]], seen: set[str]) -> Iterator[Item]:
        fresh = []
        for photo, offset in batch:
            photo_id = str(photo.get("id") or "")
            if not photo_id or photo_id in seen:
                continue
            seen.add(photo_id)
            if is_premium(photo):
                self._skip("unsplash_plus")
                continue
            fresh.append((photo, offset))
        known = self.known_ids([str(p["id"]) for p, _ in fresh]) if (self.known_ids and fresh) else set()
        for photo, offset in fresh:
            if photo["id"] in known:
                self._skip("already_known")
                continue
            item = self._prepare(unit, photo, offset)
            if item is not None:
                yield item

    def _prepare(self, unit: Unit, photo: dict[str, Any], offset: int) -> Item | None:
        photo_id = str(photo["id"])
        self._reserve(photo_id)
        if self._want_details(photo):
            try:
                full = self.api.get(f"/photos/{photo_id}", kind=ORDINARY, item_id=photo_id).data
            except PermanentError as exc:
                logger.info("photo %s skipped: %s", photo_id, exc)
                self.governor.release_item(photo_id)
                self._skip("gone")
                return None
            except BaseException:
                self.governor.release_item(photo_id)  # not yielded: nothing to track
                raise
            if isinstance(full, dict):
                photo = {**photo, **full}
        raw = str((photo.get("urls") or {}).get("raw") or "")
        if not raw:
            self.governor.release_item(photo_id)
            self._skip("no_image_url")
            return None
        url = image_url(raw, width=self.image.width, height=self.image.height,
                        quality=self.image.quality, fmt=self.image.fmt)
        return Item(
            id=photo_id, source=self.name, unit=unit.key, offset=offset, url=url,
            ext_hint=self.image.fmt, focal_hint_mm35=focal_hint_mm35(photo),
            meta=photo_meta(photo, self.app_name),
        )

    def _want_details(self, photo: dict[str, Any]) -> bool:
        if self.details == "never" or has_details(photo):
            return False
        if self.details == "always":
            return True
        limit = self.governor.limit
        return limit is not None and limit >= PRODUCTION_LIMIT

    def _reserve(self, photo_id: str) -> None:
        while True:
            decision = self.governor.reserve_item(photo_id, self.clock())
            if decision.granted:
                return
            if self.stop_on_rate_limit or self.stop_requested():
                raise RateLimited(f"{SERVICE}: hourly API budget spent", decision.wait_s, service=SERVICE)
            self.api.wait_for_window(decision.wait_s)

    def _skip(self, reason: str) -> None:
        self._skipped[reason] = self._skipped.get(reason, 0) + 1

    def _clamp(self, per_page: int) -> int:
        clamped, changed = paging.clamp_per_page(per_page)
        if changed:
            logger.warning("PER_PAGE=%s is outside Unsplash's 1..%d; using %d",
                           per_page, paging.MAX_PER_PAGE, clamped)
        return clamped


def _photo_list(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        return []
    return [p for p in data if isinstance(p, dict)]


def _validate(kind: str, arg: str, order_by: str, content_filter: str, orientation: str,
              color: str, details: str, range_size: int) -> None:
    checks = [
        ("SOURCE", kind, KINDS), ("UNSPLASH_ORDER_BY", order_by, ORDERS),
        ("UNSPLASH_CONTENT_FILTER", content_filter, CONTENT_FILTERS),
        ("UNSPLASH_ORIENTATION", orientation, ORIENTATIONS), ("UNSPLASH_COLOR", color, COLORS),
        ("UNSPLASH_DETAILS", details, DETAILS),
    ]
    for name, value, allowed in checks:
        if value not in allowed:
            shown = ", ".join(a or "(empty)" for a in allowed)
            raise ConfigError(f"{name}: {value!r} is not one of {shown}")
    if kind in ("topic", "user", "collection") and (not arg or "/" in arg or arg.strip() != arg):
        raise ConfigError(f"SOURCE: unsplash-{kind} needs a plain name, got {arg!r}")
    if range_size < 1:
        raise ConfigError("RANGE_SIZE: must be at least 1")
