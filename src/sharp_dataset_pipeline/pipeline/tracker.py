"""Which leased units are finished, so the publisher can mark them done in the same step.

A unit is done when its enumeration finished (not cut short by a limit or a stop), and every
item admitted from it reached a final state in a published batch: published, or failed for
good. A unit with a failure that may succeed on a later run stays not-done and is released.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _UnitProgress:
    admitted: int = 0
    final: int = 0
    closed: bool = False
    complete: bool = True
    retry_later: bool = False
    done_sent: bool = False


@dataclass
class UnitTracker:
    _units: dict[str, _UnitProgress] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Transient failures an item had before this run (from the ledger), so the last allowed
    # attempt settles its unit at once instead of one run later.
    prior_attempts: dict[str, int] = field(default_factory=dict)
    # Hears of each abandoned item, so the display stops counting it as in flight.
    on_abandon: Callable[[], None] | None = None

    def open(self, key: str) -> None:
        with self._lock:
            self._units.setdefault(key, _UnitProgress())

    def admit(self, key: str) -> None:
        with self._lock:
            self._units[key].admitted += 1

    def close(self, key: str, complete: bool) -> None:
        """Enumeration of the unit ended; ``complete`` is False when a limit or stop cut it short."""
        with self._lock:
            unit = self._units[key]
            unit.closed = True
            unit.complete = unit.complete and complete

    def settle(self, key: str, retry_later: bool = False) -> None:
        """One admitted item reached a final state in a published batch."""
        with self._lock:
            unit = self._units.get(key)
            if unit is None:
                return
            unit.final += 1
            unit.retry_later = unit.retry_later or retry_later

    def abandon(self, key: str) -> None:
        """An admitted item will not be finished in this run (stop, abort)."""
        with self._lock:
            unit = self._units.get(key)
            if unit is not None:
                unit.complete = False
        if self.on_abandon is not None:
            self.on_abandon()

    def ready_after(self, settling: list[tuple[str, bool]]) -> list[str]:
        """Units that would be done once ``settling`` ((unit, retry_later) per item) is published.

        Pure preview: nothing changes until ``settle`` and ``confirm_done`` after the publish
        landed, so the done marker can ride in the same atomic step as the unit's last items.
        """
        extra: dict[str, int] = {}
        retry: set[str] = set()
        for key, retry_later in settling:
            extra[key] = extra.get(key, 0) + 1
            if retry_later:
                retry.add(key)
        with self._lock:
            ready = []
            for key, unit in self._units.items():
                if unit.done_sent or not unit.closed or not unit.complete:
                    continue
                if unit.retry_later or key in retry:
                    continue
                if unit.final + extra.get(key, 0) >= unit.admitted:
                    ready.append(key)
            return ready

    def lose(self, key: str) -> None:
        """Another client took this unit's lease over: it finishes and marks the unit, not us."""
        with self._lock:
            unit = self._units.get(key)
            if unit is not None:
                unit.complete = False
                unit.done_sent = True  # not held any more: no renewal, no release, no done marker

    def confirm_done(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._units[key].done_sent = True

    def held(self) -> list[str]:
        """Units this client leased and has not marked done."""
        with self._lock:
            return [k for k, u in self._units.items() if not u.done_sent]
