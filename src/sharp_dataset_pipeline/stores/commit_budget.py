"""Request budgets of one Hub client: a commits-per-hour governor and API call counters. Pure: the
clock is passed in, nothing sleeps here (callers sleep for ``delay()``).

The Hub caps commits per repository (about 128 an hour; some accounts see 256 or 320) and answers
429 past it, for an hour. The governor keeps everything one client commits (publishes, leases,
releases, compaction, the dataset card) under ``per_hour`` in every sliding hour, and a 429's
``Retry-After`` pauses it for everyone in this client. With several clients on one repo, give each
a share (e.g. 100 / number of clients).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

DEFAULT_COMMITS_PER_HOUR = 100  # safely under the smallest quota seen (128/h per repo)
HOUR_S = 3600.0
API_WINDOW_S = 300.0  # the Hub counts API and resolver calls in fixed 5-minute windows


class SlidingWindowLimit:
    """At most ``limit`` events in any ``window_s`` seconds, plus an explicit pause."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if window_s <= 0:
            raise ValueError(f"window must be positive, got {window_s}")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: deque[float] = deque()
        self._paused_until = float("-inf")

    def _trim(self, now: float) -> None:
        while self._events and now - self._events[0] >= self.window_s:
            self._events.popleft()

    def delay(self) -> float:
        """Seconds to wait before the next event is allowed (0.0: go now)."""
        now = self._clock()
        self._trim(now)
        wait = max(0.0, self._paused_until - now)
        if len(self._events) >= self.limit:
            # The window frees up when its oldest counted event leaves it.
            oldest = self._events[len(self._events) - self.limit]
            wait = max(wait, oldest + self.window_s - now)
        return wait

    def record(self) -> None:
        """One event happened now."""
        now = self._clock()
        self._trim(now)
        self._events.append(now)

    def pause(self, seconds: float) -> None:
        """Allow nothing for ``seconds`` from now (a server said so); never shortens a pause."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def count(self) -> int:
        """Events in the current window."""
        self._trim(self._clock())
        return len(self._events)


class CommitBudget(SlidingWindowLimit):
    """The commits-per-hour governor (counts every commit request sent, landed or not)."""

    def __init__(self, per_hour: int = DEFAULT_COMMITS_PER_HOUR, *, clock: Callable[[], float],
                 window_s: float = HOUR_S) -> None:
        super().__init__(per_hour, window_s, clock)


class CallCounter:
    """Totals of calls by kind (``api``, ``resolver``, ``commit``...) and of published items."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.totals: Counter[str] = Counter()
        self._api_recent: deque[float] = deque()
        self._landed_recent: deque[float] = deque()

    def add(self, kind: str, n: int = 1) -> None:
        self.totals[kind] += n
        if kind == "api":
            now = self._clock()
            self._api_recent.extend([now] * n)
        elif kind == "commit_landed":
            self._landed_recent.extend([self._clock()] * n)

    def landed_last_hour(self) -> tuple[float, ...]:
        """When this client's commits of the last hour landed (every kind): what the repo's quota counts."""
        now = self._clock()
        while self._landed_recent and now - self._landed_recent[0] >= HOUR_S:
            self._landed_recent.popleft()
        return tuple(self._landed_recent)

    def api_last_window(self) -> int:
        now = self._clock()
        while self._api_recent and now - self._api_recent[0] >= API_WINDOW_S:
            self._api_recent.popleft()
        return len(self._api_recent)

    def report(self, commits_last_hour: int) -> dict[str, float | int]:
        """Budget figures for metrics and the final summary."""
        published = self.totals["published_items"]
        commits = self.totals["commit"]
        api = self.totals["api"]
        return {
            "commits": commits,
            "commits_last_hour": commits_last_hour,
            "commits_landed": self.totals["commit_landed"],
            "commit_conflicts_412": self.totals["conflict_412"],
            "commit_busy_409": self.totals["busy_409"],
            "commit_rate_limited_429": self.totals["rate_limited_429"],
            "commit_unknown_outcome": self.totals["unknown_outcome"],
            "api_calls": api,
            "api_calls_last_5min": self.api_last_window(),
            "resolver_calls": self.totals["resolver"],
            "published_items": published,
            "commits_per_published_item": commits / published if published else 0.0,
            "api_calls_per_published_item": api / published if published else 0.0,
            "waited_s": round(self.totals["waited_ms"] / 1000.0, 3),
        }
