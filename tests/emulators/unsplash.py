"""A loopback Unsplash API + image CDN for tests and benchmarks (a test fixture, not a product feature).

``UnsplashEmulator`` serves, from a seeded generated catalogue, over real HTTP on 127.0.0.1:

- ``GET /photos`` (editorial feed, latest first), ``/photos/:id`` (full JSON with ``exif``, ``tags``,
  ``topics``), ``/photos/:id/download`` (download tracking: counted per photo),
  ``/search/photos`` (``total``, ``total_pages``, ``results``; empty past page ``search_depth``),
  ``/topics/:slug/photos`` and ``/users/:name/photos`` (``order_by=latest|oldest``),
  ``/collections/:id/photos`` (latest first; ``order_by=oldest`` honoured);
- ``Link``, ``X-Total``, ``X-Per-Page`` and ``X-Ratelimit-Limit`` / ``X-Ratelimit-Remaining`` headers;
  an hourly window (starting at the first call after the last one expired) on an injectable clock;
  past the limit it answers 403 plain text "Rate Limit Exceeded" (``limit_style="403"``) or 429;
- ``GET /cdn/photo-<id>?w=&h=&q=&fm=``: real small JPEGs (Pillow, seeded per photo).

Faults come from ``faults`` (``emulators/faults.py``), keyed by *route*: ``/photos``, ``/photos/:id``,
``/photos/:id/download``, ``/search/photos``, ``/topics/:slug/photos``, ``/users/:name/photos``,
``/collections/:id/photos``, ``/cdn``. ``prepend(n)`` adds new photos at the head of the feed;
``prepend_after_list_requests(k, n)`` does it by itself after every k-th ``/photos`` call. ``counts``
holds requests per route; ``tracked`` download-tracking calls per photo id.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from .faults import Fault, FaultSchedule
from .files import jpeg_bytes
from .server import LoopbackServer, drop_connection

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
WORDS = ("mountain", "lake", "city", "street", "forest", "beach", "interior", "room", "bridge",
         "desert", "snow", "river", "tower", "garden", "harbor", "canyon", "village", "museum")
TAGS = ("new york", "black and white", "landscape", "architecture", "nature", "travel", "sky",
        "building", "water", "tree", "outdoors", "urban")
CAMERAS = (("Canon", "Canon EOS 5D Mark IV", "35.0"), ("NIKON CORPORATION", "NIKON D7500", "18.0"),
           ("SONY", "ILCE-7M3", "50.0"), ("Apple", "iPhone 13 Pro", "5.7"),
           ("FUJIFILM", "X-T4", "23.0"), (None, None, None))
TOPICS = ("nature", "architecture-interior", "street-photography", "travel")
USERS = ("anna_k", "bo.li", "carla-m", "dmitri", "eve_photos", "farid", "gustav")


class FakeClock:
    """A thread-safe settable clock; ``sleep`` advances it (an hour passes in no time)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


@dataclass
class _Answer:
    status: int
    body: bytes
    ctype: str = "application/json"
    headers: dict[str, str] | None = None
    truncate_to: int | None = None


class UnsplashEmulator(LoopbackServer):
    """``with UnsplashEmulator(n_photos=90) as emu: UnsplashSource(UnsplashOptions(..., api_base=emu.base_url))``."""

    def __init__(
        self,
        *,
        n_photos: int = 90,
        seed: int = 0,
        access_key: str = "test-access-key-0123",
        limit: int = 5000,
        window_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        limit_style: str = "403",
        premium_every: int = 0,
        search_depth: int = 200,
        cdn_max_side: int = 96,
        leading_dash_ids: bool = True,
        total_extra: int = 0,
    ) -> None:
        self.access_key, self.limit, self.window_s, self.clock = access_key, limit, window_s, clock
        self.limit_style, self.premium_every = limit_style, premium_every
        self.search_depth, self.cdn_max_side = search_depth, cdn_max_side
        self.leading_dash_ids = leading_dash_ids  # real ids may start with "-" (e.g. "-2vD8lIhdnw")
        self.total_extra = total_extra  # an X-Total that says this many more photos than the pages list
        self.rng = random.Random(seed)
        self.faults = FaultSchedule()
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (route, query) of every request
        self.tracked: Counter[str] = Counter()
        self.limit_responses = 0
        self.cdn_auth_headers = 0
        self.photos: dict[str, dict[str, Any]] = {}
        self.feed: list[str] = []  # newest first
        self.topics: dict[str, list[str]] = {t: [] for t in TOPICS}  # oldest first
        self.users: dict[str, list[str]] = {u: [] for u in USERS}  # oldest first
        self.collections: dict[str, list[str]] = {"c0ll3ct": []}  # in order added (oldest first)
        self._lock = threading.RLock()
        self._window_start: float | None = None
        self._used = 0
        self._serial = 0
        self._prepend_every: tuple[int, int] | None = None
        self._jpeg_cache: dict[tuple[str, int, int], bytes] = {}
        for _ in range(n_photos):
            self._add_photo()

    # ---- catalogue -----------------------------------------------------------------------
    def _new_id(self) -> str:
        while True:
            pid = "".join(self.rng.choice(ALPHABET) for _ in range(11))
            if pid.startswith("-") and not self.leading_dash_ids:
                continue
            if pid not in self.photos:
                return pid

    def _add_photo(self) -> str:
        """A new photo, newer than every earlier one: it goes to the head of the feed."""
        self._serial += 1
        pid = self._new_id()
        rng = self.rng
        premium = bool(self.premium_every) and self._serial % self.premium_every == 0
        make, model, focal = rng.choice(CAMERAS)
        user = rng.choice(USERS)
        topic = rng.choice(TOPICS)
        words = rng.sample(WORDS, 2)
        tags = rng.sample(TAGS, 3)
        width, height = rng.choice(((6000, 4000), (4000, 6000), (5000, 5000), (4032, 3024)))
        self.photos[pid] = {
            "serial": self._serial, "premium": premium, "make": make, "model": model, "focal": focal,
            "user": user, "topic": topic, "words": words, "tags": tags, "width": width, "height": height,
            "ixid": "M3w" + "".join(rng.choice(ALPHABET[:62]) for _ in range(20)),
        }
        self.feed.insert(0, pid)  # photos are made in time order, so the newest is always the head
        self.topics[topic].append(pid)
        self.users[user].append(pid)
        if self._serial % 3 == 0:
            self.collections["c0ll3ct"].append(pid)
        return pid

    def prepend(self, n: int) -> list[str]:
        """``n`` brand-new photos at the head of the feed (as if published just now)."""
        with self._lock:
            return [self._add_photo() for _ in range(n)]

    def prepend_after_list_requests(self, every: int, n: int) -> None:
        """After every ``every``-th ``GET /photos``, put ``n`` new photos at the head."""
        self._prepend_every = (every, n)

    def remove(self, photo_id: str) -> None:
        with self._lock:
            self.feed.remove(photo_id)

    def photo_json(self, pid: str, *, full: bool = False, search: bool = False) -> dict[str, Any]:
        p = self.photos[pid]
        base = self.base_url
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_600_000_000 + p["serial"] * 3600))
        raw = (f"https://plus.unsplash.com/premium_photo-{p['serial']}?ixid={p['ixid']}&ixlib=rb-4.0.3"
               if p["premium"] else f"{base}/cdn/photo-{pid}?ixid={p['ixid']}&ixlib=rb-4.0.3")
        data: dict[str, Any] = {
            "id": pid, "slug": f"{'-'.join(p['words'])}-{pid}", "created_at": created, "updated_at": created,
            "promoted_at": None, "width": p["width"], "height": p["height"], "color": "#40a0c0",
            "blur_hash": "LEHV6nWB2yk8pyo0adR*.7kCMdnj",
            "description": f"A {p['words'][0]} near the {p['words'][1]}, by {p['user']}",
            "alt_description": f"{p['words'][0]} and {p['words'][1]}",
            "urls": {"raw": raw, "full": raw + "&q=85&fm=jpg", "regular": raw + "&w=1080",
                     "small": raw + "&w=400", "thumb": raw + "&w=200"},
            "links": {"self": f"{base}/photos/{pid}", "html": f"https://unsplash.com/photos/{pid}",
                      "download": f"{base}/photos/{pid}/download",
                      "download_location": f"{base}/photos/{pid}/download?ixid={p['ixid']}"},
            "likes": p["serial"] % 97, "premium": p["premium"], "plus": p["premium"],
            "topic_submissions": {p["topic"]: {"status": "approved"}},
            "user": {"id": f"u-{p['user']}", "username": p["user"], "name": p["user"].title(),
                     "links": {"html": f"https://unsplash.com/@{p['user']}"}},
        }
        if search or full:
            data["tags"] = [{"type": "search", "title": t} for t in p["tags"]]
        if full:
            data["exif"] = {"make": p["make"], "model": p["model"], "name": None,
                            "exposure_time": "1/250", "aperture": "4.0", "focal_length": p["focal"],
                            "iso": 100}
            title = p["topic"].replace("-", " ").title()
            data["topics"] = [{"id": p["topic"], "slug": p["topic"], "title": title}]
            data["downloads"] = p["serial"] * 10
        return data

    # ---- server lifecycle ----------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    @property
    def api_requests(self) -> int:
        """API calls received (every route but the CDN), answered or refused."""
        return sum(n for route, n in self.counts.items() if route != "/cdn")

    # ---- request handling ----------------------------------------------------------------
    def answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[_Answer, Fault | None]:
        route, args = _route(path)
        with self._lock:
            self.counts[route] += 1
            self.requests.append((route, dict(query)))
        if route == "/cdn":
            if any(k.lower() == "authorization" for k in headers):
                self.cdn_auth_headers += 1
            fault = self.faults.next(route)
            if fault is not None and fault.status:
                return _Answer(fault.status, fault.body, "text/plain", fault.headers), fault
            return self._cdn(args[0], query), fault
        if headers.get("authorization", "") != f"Client-ID {self.access_key}":
            return _json(401, {"errors": ["OAuth error: The access token is invalid"]}), None
        fault = self.faults.next(route)
        if fault is not None and fault.status:
            return _Answer(fault.status, fault.body, "text/plain", dict(fault.headers)), fault
        with self._lock:
            limited = self._spend()
            if limited is not None:
                return limited, fault
            answer = self._api(route, args, query)
            answer.headers = {**(answer.headers or {}), **self._quota_headers()}
            if route == "/photos" and self._prepend_every and self.counts[route] % self._prepend_every[0] == 0:
                self.prepend(self._prepend_every[1])
        return answer, fault

    def _spend(self) -> _Answer | None:
        now = self.clock()
        if self._window_start is None or now >= self._window_start + self.window_s:
            self._window_start, self._used = now, 0
        if self._used >= self.limit:
            self.limit_responses += 1
            hdrs = {"X-Ratelimit-Limit": str(self.limit), "X-Ratelimit-Remaining": "0"}
            if self.limit_style == "429":
                return _json(429, {"errors": ["Rate Limit Exceeded"]}, hdrs)
            return _Answer(403, b"Rate Limit Exceeded", "text/plain", hdrs)
        self._used += 1
        return None

    def _quota_headers(self) -> dict[str, str]:
        return {"X-Ratelimit-Limit": str(self.limit), "X-Ratelimit-Remaining": str(self.limit - self._used)}

    def _api(self, route: str, args: list[str], q: dict[str, str]) -> _Answer:
        per_page = min(max(_int(q.get("per_page"), 10), 1), 30)
        page = max(_int(q.get("page"), 1), 1)
        if route == "/photos":
            return self._listing("/photos", list(self.feed), page, per_page, q)
        if route == "/photos/:id":
            if args[0] not in self.photos:
                return _json(404, {"errors": ["Couldn't find Photo"]})
            return _json(200, self.photo_json(args[0], full=True))
        if route == "/photos/:id/download":
            if args[0] not in self.photos:
                return _json(404, {"errors": ["Couldn't find Photo"]})
            self.tracked[args[0]] += 1
            return _json(200, {"url": self.photo_json(args[0])["urls"]["full"]})
        if route == "/search/photos":
            return self._search(page, per_page, q)
        feeds = {"/topics/:slug/photos": self.topics, "/users/:name/photos": self.users,
                 "/collections/:id/photos": self.collections}
        if route in feeds and args[0] in feeds[route]:
            ids = list(feeds[route][args[0]])
            if route == "/collections/:id/photos":
                ids = ids if q.get("order_by") == "oldest" else ids[::-1]
            elif q.get("order_by", "latest") != "oldest":
                ids = ids[::-1]
            if q.get("orientation"):
                ids = [i for i in ids if _orientation(self.photos[i]) == q["orientation"]]
            return self._listing(f"/{route.split('/')[1]}/{args[0]}/photos", ids, page, per_page, q)
        return _json(404, {"errors": ["Not found"]})

    def _listing(self, path: str, ids: list[str], page: int, per_page: int, q: dict[str, str]) -> _Answer:
        chunk = ids[(page - 1) * per_page: page * per_page]
        headers = {"X-Total": str(len(ids) + self.total_extra), "X-Per-Page": str(per_page),
                   "Link": self._link(path, page, per_page, len(ids), q)}
        return _json(200, [self.photo_json(i) for i in chunk], headers)

    def _search(self, page: int, per_page: int, q: dict[str, str]) -> _Answer:
        query = q.get("query", "").strip().lower()
        if not query:
            return _json(400, {"errors": ["query is missing"]})
        terms = query.split()
        hits = []
        for pid in self.feed:
            p = self.photos[pid]
            text = " ".join([*p["words"], *p["tags"]])
            score = sum(text.count(t) for t in terms)
            if score and (not q.get("orientation") or _orientation(p) == q["orientation"]):
                hits.append((score, p["serial"], pid))
        if q.get("order_by") == "latest":
            hits.sort(key=lambda h: -h[1])
        else:
            hits.sort(key=lambda h: (-h[0], h[2]))
        total = len(hits)
        pages = math.ceil(total / per_page)
        chunk = [] if page > self.search_depth else hits[(page - 1) * per_page: page * per_page]
        body = {"total": total, "total_pages": pages,
                "results": [self.photo_json(pid, search=True) for _, _, pid in chunk]}
        headers = {"X-Total": str(total), "X-Per-Page": str(per_page),
                   "Link": self._link("/search/photos", page, per_page, total, q)}
        return _json(200, body, headers)

    def _link(self, path: str, page: int, per_page: int, total: int, q: dict[str, str]) -> str:
        last = max(1, math.ceil(total / per_page))
        rels = [("first", 1), ("prev", page - 1), ("next", page + 1), ("last", last)]
        parts = []
        for rel, p in rels:
            if 1 <= p <= last and not (rel == "prev" and page == 1) and not (rel == "next" and page >= last):
                params = {**q, "page": str(p), "per_page": str(per_page)}
                parts.append(f'<{self.base_url}{path}?{urlencode(params)}>; rel="{rel}"')
        return ", ".join(parts)

    def _cdn(self, name: str, q: dict[str, str]) -> _Answer:
        pid = name.removeprefix("photo-")
        if pid not in self.photos:
            return _Answer(404, b"not found", "text/plain")
        p = self.photos[pid]
        w, h = p["width"], p["height"]
        scale = min(1.0, self.cdn_max_side / max(w, h))
        for key, size in (("w", w), ("h", h)):
            if _int(q.get(key), 0) > 0:
                scale = min(scale, _int(q.get(key), 0) / size)
        dims = (max(8, round(w * scale)), max(8, round(h * scale)))
        with self._lock:
            data = self._jpeg_cache.get((pid, *dims))
            if data is None:
                data = jpeg_bytes(dims[0], dims[1], seed=p["serial"])
                self._jpeg_cache[(pid, *dims)] = data
        return _Answer(200, data, "image/jpeg")


def _route(path: str) -> tuple[str, list[str]]:
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["cdn"] and len(parts) == 2:
        return "/cdn", [parts[1]]
    if parts == ["photos"]:
        return "/photos", []
    if parts[:1] == ["photos"] and len(parts) == 2:
        return "/photos/:id", [parts[1]]
    if parts[:1] == ["photos"] and len(parts) == 3 and parts[2] == "download":
        return "/photos/:id/download", [parts[1]]
    if parts == ["search", "photos"]:
        return "/search/photos", []
    names = {"topics": "/topics/:slug/photos", "users": "/users/:name/photos",
             "collections": "/collections/:id/photos"}
    if len(parts) == 3 and parts[0] in names and parts[2] == "photos":
        return names[parts[0]], [parts[1]]
    return "/" + "/".join(parts), []


def _orientation(p: dict[str, Any]) -> str:
    if p["width"] > p["height"]:
        return "landscape"
    return "portrait" if p["width"] < p["height"] else "squarish"


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> _Answer:
    return _Answer(status, json.dumps(body).encode(), "application/json", dict(headers or {}))


def _make_handler(owner: UnsplashEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in one segment: without these, Nagle plus delayed ACKs add
        # ~40 ms to every keep-alive request.
        disable_nagle_algorithm = True
        wbufsize = -1

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer, fault = owner.answer(parts.path, query, headers)
            if fault is not None and fault.delay_s:
                time.sleep(fault.delay_s)
            if fault is not None and fault.drop:
                self._drop()
                return
            self._send(answer, fault.truncate_to if fault is not None else None)

        def _send(self, answer: _Answer, truncate_to: int | None) -> None:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.ctype)
            self.send_header("Content-Length", str(len(answer.body)))
            for key, value in (answer.headers or {}).items():
                self.send_header(key, value)
            if truncate_to is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer.body if truncate_to is None else answer.body[:truncate_to])
            self.wfile.flush()
            if truncate_to is not None:
                self._drop()

        def _drop(self) -> None:
            drop_connection(self)

    return Handler
