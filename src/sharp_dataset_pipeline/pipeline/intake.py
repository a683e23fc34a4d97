"""The source stage: walk units in order, lease each, admit the items the ledger does not know.

Runs in one thread. Units that are done are skipped without a lease; units leased by another
client are skipped; items already published, removed, or failed for good are never admitted.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

from ..errors import LeaseConflict, PermanentError, RateLimited, SharpDatasetError, StoreError, TransientError
from ..observe.events import EventSink
from ..records import Item, Unit
from ..sources.base import Source
from ..stores.base import Store
from .stop import StopControl
from .tracker import UnitTracker

log = logging.getLogger(__name__)

CHUNK = 64


@dataclass(frozen=True)
class IntakeOptions:
    client_id: str
    lease_ttl_s: float
    max_images: int
    max_scan: int
    max_item_attempts: int


class Intake:
    """Feeds admitted items into ``todo``; ``run`` returns when the source ends, a limit is
    reached, a stop is requested, or the source is rate limited (``rate_limited`` is then set)."""

    def __init__(
        self,
        source: Source,
        store: Store,
        tracker: UnitTracker,
        opts: IntakeOptions,
        sink: EventSink,
        control: StopControl,
        todo: queue.Queue[object],
    ) -> None:
        self.source, self.store, self.tracker, self.opts = source, store, tracker, opts
        self.sink, self.control, self.todo = sink, control, todo
        self.scanned = 0
        self.admitted = 0
        self.rate_limited: RateLimited | None = None
        self.error: SharpDatasetError | None = None
        self.limit_reached = ""

    def run(self) -> None:
        try:
            for unit in self.source.units():
                if self._should_end():
                    return
                if not self._take(unit):
                    continue
                complete = self._admit_unit(unit)
                self.tracker.close(unit.key, complete)
                if not complete:
                    return
        except RateLimited as exc:
            self.rate_limited = exc
            log.warning("source rate limited: %s", exc)
        except (TransientError, PermanentError, StoreError, LeaseConflict) as exc:
            # Intake ends; what was admitted still drains through publish.
            self.error = exc
            log.error("source stopped: %s", exc)
        except SharpDatasetError as exc:  # ConfigError (e.g. a bad key): the run ends with exit code 2
            self.error = exc

    def _should_end(self) -> bool:
        if self.control.stopping:
            return True
        if self.opts.max_images and self.admitted >= self.opts.max_images:
            self.limit_reached = f"MAX_IMAGES={self.opts.max_images}"
            return True
        if self.opts.max_scan and self.scanned >= self.opts.max_scan:
            self.limit_reached = f"MAX_SCAN={self.opts.max_scan}"
            return True
        return False

    def _take(self, unit: Unit) -> bool:
        status = self.store.unit_status([unit.key]).get(unit.key)
        if status is not None and status.done:
            self.sink.count("source", "units_already_done")
            return False
        lease = self.store.acquire(unit, self.opts.client_id, self.opts.lease_ttl_s)
        if lease is None:
            self.sink.count("source", "units_leased_elsewhere")
            return False
        self.sink.count("source", "units_leased")
        self.tracker.open(unit.key)
        return True

    def _admit_unit(self, unit: Unit) -> bool:
        """Admit the unit's new items; False when enumeration was cut short."""
        chunk: list[Item] = []
        for item in self.source.items(unit):
            self.control.wait_while_paused()
            if self._should_end():
                self._admit_chunk(chunk)
                return False
            self.scanned += 1
            chunk.append(item)
            if len(chunk) >= CHUNK:
                ok, chunk = self._admit_chunk(chunk), []
                if not ok:
                    return False
        return self._admit_chunk(chunk)

    def _admit_chunk(self, chunk: list[Item]) -> bool:
        if not chunk:
            return True
        states = self.store.item_states(item.id for item in chunk)
        for item in chunk:
            state = states.get(item.id)
            skip = self._skip_reason(state)
            if skip:
                self.sink.count("skipped", skip)
                continue
            if self.opts.max_images and self.admitted >= self.opts.max_images:
                self.limit_reached = f"MAX_IMAGES={self.opts.max_images}"
                return False
            if not self._put(item):
                return False
            self.admitted += 1
            self.tracker.admit(item.unit)
            if state is not None and state.transient_failures:
                self.tracker.prior_attempts[item.id] = state.transient_failures
            self.sink.count("source", "admitted")
        return True

    def _skip_reason(self, state: object) -> str:
        if state is None:
            return ""
        if getattr(state, "published", False):
            return "already_published"
        if getattr(state, "excluded", False):
            return "removed"
        if getattr(state, "failed_permanently", False):
            return "failed_before"
        if getattr(state, "transient_failures", 0) >= self.opts.max_item_attempts:
            return "too_many_attempts"
        return ""

    def _put(self, item: Item) -> bool:
        while not self.control.stopping:
            try:
                self.todo.put(item, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

