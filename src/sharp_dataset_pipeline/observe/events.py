"""Progress is an event sink passed in: stages report counts and busy time, sinks display them."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol


class EventSink(Protocol):
    def count(self, stage: str, name: str, n: int = 1) -> None: ...

    def busy(self, stage: str, seconds: float) -> None: ...

    def event(self, kind: str, **fields: Any) -> None: ...


class Metrics:
    """A thread-safe sink that keeps totals; display sinks read ``snapshot()``."""

    def __init__(self, clock: Any = time.monotonic, on_event: Callable[..., None] | None = None) -> None:
        """``on_event(kind, **fields)`` hears every one-off event (``observe.items`` writes the
        per-input status from them); None: events are dropped (the logs carry them)."""
        self._clock = clock
        self._on_event = on_event
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._busy: dict[str, float] = defaultdict(float)
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self.started = clock()

    def count(self, stage: str, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(stage, name)] += n

    def busy(self, stage: str, seconds: float) -> None:
        now = self._clock()
        with self._lock:
            self._busy[stage] += seconds
            self._first.setdefault(stage, now - seconds)
            self._last[stage] = now

    def event(self, kind: str, **fields: Any) -> None:
        """Metrics keeps totals only; a one-off event is not a total, so it goes to ``on_event``."""
        if self._on_event is not None:
            self._on_event(kind, **fields)

    def get(self, stage: str, name: str) -> int:
        with self._lock:
            return self._counts.get((stage, name), 0)

    def busy_seconds(self, stage: str) -> float:
        with self._lock:
            return self._busy.get(stage, 0.0)

    def active_window(self, stage: str) -> float:
        """Seconds between the start of a stage's first busy span and the end of its last."""
        with self._lock:
            if stage not in self._first:
                return 0.0
            return self._last[stage] - self._first[stage]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts: dict[str, dict[str, int]] = defaultdict(dict)
            for (stage, name), n in self._counts.items():
                counts[stage][name] = n
            return {
                "elapsed_s": self._clock() - self.started,
                "counts": dict(counts),
                "busy_s": dict(self._busy),
            }
