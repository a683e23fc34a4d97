"""The Unsplash quota governor: decides, before each API call, whether it may go now.

Pure and thread-safe: every method takes ``now`` (seconds, any monotonic-enough clock); nothing
here sleeps or does I/O. The source asks ``request(kind, now)`` before each call and reports the
response headers with ``record(...)``.

Model. Unsplash gives ``X-Ratelimit-Limit`` (50/h for a demo key, 5,000/h in production) and
``X-Ratelimit-Remaining`` on every response, and no reset time. The governor learns both from the
headers, counts calls it has granted but not yet seen answered, and assumes the hourly window
began at the first call it made in it (the real window may have begun earlier, which only makes
the estimate of when it reopens late, never early).

Reserve for download tracking. Every photo handed to the pipeline will need one tracking call
once it is published. The source therefore *reserves* that call (``reserve_item``) before it yields
the photo; ordinary calls (listing, details) are granted only while ``remaining`` still covers all
reserved tracking calls plus a small ``margin`` (room for other users of the same key). Tracking
calls spend the reserve. A reservation lapses when the photo is tracked, released (it was skipped
or failed), or after ``owed_ttl_s`` so that a photo the pipeline dropped silently cannot hold budget
forever. So in normal operation the limit is never reached, and every published photo can still be
tracked.

Three signals mean the limit was reached anyway: HTTP 429, HTTP 403 whose body says "rate limit",
and ``X-Ratelimit-Remaining: 0``. Then nothing is granted until the window reopens. Pacing waits
(``min_interval_s``, or a first call still in flight) are reported with ``exhausted=False``: they are
never mistaken for a limit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

ORDINARY = "ordinary"
TRACK = "track"
WINDOW_S = 3600.0
PRODUCTION_LIMIT = 1000  # X-Ratelimit-Limit at or above this is a production key, not a demo key


@dataclass(frozen=True)
class QuotaDecision:
    """``wait_s == 0``: the call may go now (and was counted). Otherwise wait ``wait_s`` seconds;
    ``exhausted`` says whether that is the hourly budget (until ``reopens_at``) or just pacing."""

    wait_s: float
    exhausted: bool = False
    reopens_at: float | None = None

    @property
    def granted(self) -> bool:
        return self.wait_s <= 0


@dataclass(frozen=True)
class QuotaSnapshot:
    limit: int | None
    remaining: int | None
    owed: int
    in_flight: int
    window_start: float | None
    reopens_at: float | None
    limit_responses: int
    granted: int


class UnsplashQuota:
    """Paces Unsplash API calls by ``X-Ratelimit-Remaining`` and the hourly window (see module doc)."""

    def __init__(
        self,
        *,
        window_s: float = WINDOW_S,
        margin: int = 2,
        min_interval_s: float = 0.0,
        owed_ttl_s: float = 900.0,
        unknown_wait_s: float = 0.05,
    ) -> None:
        if window_s <= 0 or margin < 0 or min_interval_s < 0 or owed_ttl_s <= 0:
            raise ValueError("invalid quota settings")
        self.window_s, self.margin, self.min_interval_s = window_s, margin, min_interval_s
        self.owed_ttl_s, self.unknown_wait_s = owed_ttl_s, unknown_wait_s
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._remaining: int | None = None
        self._in_flight = 0
        self._window_start: float | None = None
        self._reopens_at: float | None = None
        self._last_grant: float | None = None
        self._owed: dict[str, float] = {}
        self._limit_responses = 0
        self._granted = 0

    # ---- decisions ---------------------------------------------------------------------
    def request(self, kind: str, now: float) -> QuotaDecision:
        """May one API call of ``kind`` (``ORDINARY`` or ``TRACK``) go now? Counts it if so."""
        with self._lock:
            self._tick(now)
            if self._reopens_at is not None:
                return QuotaDecision(self._reopens_at - now, True, self._reopens_at)
            if self._last_grant is not None and now < self._last_grant + self.min_interval_s:
                return QuotaDecision(self._last_grant + self.min_interval_s - now)
            if self._remaining is None:
                # Nothing learned yet (first call, or the window just reopened): one call at a
                # time until a response tells us the limit and what is left.
                if self._in_flight > 0:
                    return QuotaDecision(self.unknown_wait_s)
                return self._grant(now)
            if self._remaining < 1:
                self._reopens_at = self._window_end(now)
                return QuotaDecision(self._reopens_at - now, True, self._reopens_at)
            if kind != TRACK and self._remaining < 1 + self.margin + len(self._owed):
                return self._exhaust(now)
            return self._grant(now)

    def reserve_item(self, item_id: str, now: float) -> QuotaDecision:
        """Reserve the tracking call of a photo about to be handed to the pipeline."""
        with self._lock:
            self._tick(now)
            if item_id in self._owed:
                return QuotaDecision(0.0)
            if self._reopens_at is not None:
                return QuotaDecision(self._reopens_at - now, True, self._reopens_at)
            # Right after a window reopens the count is unknown until the next answer: assume the
            # learned limit rather than letting an unbounded number of photos through.
            left = self._remaining if self._remaining is not None else self._limit
            if left is not None and left < 1 + self.margin + len(self._owed):
                return self._exhaust(now)
            self._owed[item_id] = now
            return QuotaDecision(0.0)

    def release_item(self, item_id: str) -> None:
        """The photo was tracked, or will never be (skipped, failed): free its reservation."""
        with self._lock:
            self._owed.pop(item_id, None)

    # ---- what the server said ----------------------------------------------------------
    def record(
        self,
        now: float,
        *,
        limit: int | None,
        remaining: int | None,
        rate_limited: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        """A granted call was answered. Headers may be absent (None), e.g. on a 5xx."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if limit is not None and limit > 0:
                self._limit = limit
            if remaining is not None:
                self._learn_remaining(remaining, now)
            if rate_limited:
                self._limit_responses += 1
                self._remaining = 0
                reopen = now + retry_after_s if retry_after_s else self._window_end(now)
                self._reopens_at = max(self._reopens_at or 0.0, reopen)
            elif remaining == 0:
                self._reopens_at = max(self._reopens_at or 0.0, self._window_end(now))

    def record_no_answer(self) -> None:
        """A granted call got no response (timeout, reset): it may or may not have counted."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    # ---- views -------------------------------------------------------------------------
    def reopens_at(self, now: float) -> float | None:
        with self._lock:
            self._tick(now)
            return self._reopens_at

    @property
    def limit(self) -> int | None:
        with self._lock:
            return self._limit

    def snapshot(self, now: float) -> QuotaSnapshot:
        with self._lock:
            self._tick(now)
            return QuotaSnapshot(
                self._limit, self._remaining, len(self._owed), self._in_flight,
                self._window_start, self._reopens_at, self._limit_responses, self._granted,
            )

    # ---- internals (lock held) ---------------------------------------------------------
    def _tick(self, now: float) -> None:
        stale = [k for k, t in self._owed.items() if now - t > self.owed_ttl_s]
        for key in stale:
            del self._owed[key]
        if self._window_start is not None and now >= self._window_start + self.window_s:
            self._new_window()
        if self._reopens_at is not None and now >= self._reopens_at:
            self._new_window()

    def _new_window(self) -> None:
        # The count resets; the real value arrives with the next response.
        self._reopens_at = None
        self._window_start = None
        self._remaining = None

    def _grant(self, now: float) -> QuotaDecision:
        self._in_flight += 1
        self._granted += 1
        self._last_grant = now
        if self._window_start is None:
            self._window_start = now
        if self._remaining is not None:
            self._remaining -= 1
        return QuotaDecision(0.0)

    def _exhaust(self, now: float) -> QuotaDecision:
        # The budget for this kind of call is spent; tracking calls may still use the reserve,
        # so this does not block the window (only a server signal or remaining 0 does).
        reopen = self._window_end(now)
        return QuotaDecision(reopen - now, True, reopen)

    def _window_end(self, now: float) -> float:
        start = self._window_start if self._window_start is not None else now
        return max(start + self.window_s, now)

    def _learn_remaining(self, remaining: int, now: float) -> None:
        # Calls granted after this one may not be counted in the header yet: subtract them.
        seen = max(0, remaining - self._in_flight)
        if self._remaining is not None and seen > self._remaining + self._in_flight:
            # The server's count went up: its window reset before our estimate. Start a new one.
            self._window_start = now
            self._reopens_at = None
        self._remaining = seen
