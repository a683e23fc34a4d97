"""The source stage: walk units in order, lease each, admit the items the ledger does not know.

Runs in one thread. Units that are done are skipped without a lease; units leased by another
client are skipped; items already published, removed, or failed for good are never admitted.
"""

from __future__ import annotations

import logging
import queue
from collections import Counter
from dataclasses import dataclass

from ..errors import (
    CommitQuotaSpent,
    LeaseConflict,
    PermanentError,
    RateLimited,
    SharpDatasetError,
    StoreError,
    TransientError,
)
from ..observe.events import EventSink
from ..records import Item, ItemState, SkippedInput, Unit
from ..sources.base import Source
from ..stores.base import Store, UnitStatus
from .options import ClaimOptions
from .stop import StopControl
from .tracker import UnitTracker

log = logging.getLogger(__name__)

CHUNK = 64


@dataclass(frozen=True)
class IntakeOptions:
    client_id: str
    claim: ClaimOptions
    # The (predictor, model version) of this run: an item is done only for the model that made it.
    model: tuple[str, str] = ("", "")


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
        self.other_models: Counter[str] = Counter()  # made by: items left alone that another model made
        # Items read from the source but not admitted yet (their ledger states are checked a chunk
        # at a time); handed on early when the source is about to wait for a rate-limit window.
        self._chunk: list[Item] = []
        self._chunk_ok = True
        source.set_wait_hook(self._admit_pending)
        source.set_skip_hook(self._repeat_skipped)

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
        except CommitQuotaSpent as exc:  # a lease commit of a stopping run: a rate limit, not an error
            self.rate_limited = RateLimited(str(exc), exc.retry_after_s, "hub")
            log.warning("%s", exc)
        except (TransientError, PermanentError, StoreError, LeaseConflict) as exc:
            # Intake ends; what was admitted still drains through publish.
            self.error = exc
            log.error("source stopped: %s", exc)
        except SharpDatasetError as exc:  # ConfigError (e.g. a bad key): the run ends with exit code 2
            self.error = exc

    def _should_end(self) -> bool:
        if self.control.stopping:
            return True
        if self.opts.claim.max_images and self.admitted >= self.opts.claim.max_images:
            self.limit_reached = f"MAX_IMAGES={self.opts.claim.max_images}"
            return True
        if self.opts.claim.max_scan and self.scanned >= self.opts.claim.max_scan:
            self.limit_reached = f"MAX_SCAN={self.opts.claim.max_scan}"
            return True
        return False

    def _take(self, unit: Unit) -> bool:
        status = self.store.unit_status([unit.key]).get(unit.key)
        reopen = status is not None and status.done
        if reopen and not self._reopens(status):
            self._note_other_models(status.models)
            self.sink.count("source", "units_already_done")
            return False
        lease = self.store.acquire(unit, self.opts.client_id, self.opts.claim.lease_ttl_s, reopen=reopen)
        if lease is None:
            self.sink.count("source", "units_leased_elsewhere")
            return False
        self.sink.count("source", "units_leased")
        self.tracker.open(unit.key)
        return True

    def _admit_unit(self, unit: Unit) -> bool:
        """Admit the unit's new items; False when enumeration was cut short.

        Items already yielded are admitted even when the source then raises (a refused rate-limit
        reservation, an outage): the source reserved their tracking calls when it yielded them,
        and dropping them would spend that budget on nothing.
        """
        self._chunk, self._chunk_ok = [], True
        try:
            for item in self.source.items(unit):
                self.control.wait_while_paused()
                if self._should_end() or not self._chunk_ok:
                    self._admit_pending()
                    return False
                self.scanned += 1
                self.sink.event("item_seen", id=item.id, source=item.origin)
                self._chunk.append(item)
                if len(self._chunk) >= CHUNK:
                    self._admit_pending()
                    if not self._chunk_ok:
                        return False
        except SharpDatasetError:
            self._admit_pending()
            self.tracker.close(unit.key, complete=False)
            raise
        self._admit_pending()
        return self._chunk_ok

    def _admit_pending(self) -> None:
        chunk, self._chunk = self._chunk, []
        if self._chunk_ok:
            self._chunk_ok = self._admit_chunk(chunk)

    def _admit_chunk(self, chunk: list[Item]) -> bool:
        if not chunk:
            return True
        states = self.store.item_states(item.id for item in chunk)
        for item in chunk:
            state = states.get(item.id)
            skip = self.skip_reason(state)
            if skip:
                self.sink.count("skipped", skip)
                self.sink.event("item_done", id=item.id, source=item.origin, status="skipped", reason=skip,
                                stage="source")
                if state is not None and skip == "published_by_other_model":
                    self._note_other_models({(state.predictor, state.model_version): 1})
                continue
            if self.opts.claim.max_images and self.admitted >= self.opts.claim.max_images:
                self.limit_reached = f"MAX_IMAGES={self.opts.claim.max_images}"
                return False
            if not self._put(item):
                return False
            self.admitted += 1
            self.tracker.admit(item.unit)
            if state is not None and state.transient_failures:
                self.tracker.prior_attempts[item.id] = state.transient_failures
            self.sink.count("source", "admitted")
        return True

    def _repeat_skipped(self, skipped: SkippedInput) -> None:
        """The source skipped an input that repeats another (counted in its ``skipped_counts``)."""
        log.info("skipped %s: %s of %s", skipped.source, skipped.reason, skipped.duplicate_of)
        self.sink.event("item_done", id=skipped.item_id, source=skipped.source, status="skipped",
                        reason=skipped.reason, stage="source", detail=skipped.detail,
                        duplicate_of=skipped.duplicate_of)

    def _reopens(self, status: UnitStatus) -> bool:
        """Whether ``run --redo`` reopens a done unit: it holds items to redo."""
        redo = self.opts.claim.redo
        if redo == "all":
            return True
        if redo == "model-changed":
            return any(model != self.opts.model for model in status.models)
        return redo == "failed" and status.failed > 0

    def _note_other_models(self, models: dict[tuple[str, str], int]) -> None:
        for (predictor, version), n in models.items():
            if (predictor, version) != self.opts.model:
                label = predictor if predictor != self.opts.model[0] else f"{predictor} {version}"
                self.other_models[label or "an unknown predictor"] += n

    def notes(self) -> list[str]:
        """What the user should know about items this run left alone on purpose."""
        if not self.other_models:
            return []
        total = sum(self.other_models.values())
        made_by = ", ".join(f"{n} by {label}" if len(self.other_models) > 1 else label
                            for label, n in sorted(self.other_models.items()))
        return [f"{total} item{'s were' if total != 1 else ' was'} published by {made_by}, not by this run's "
                f"{self.opts.model[0]} ({self.opts.model[1]}); pass --redo model-changed to replace them"]

    def skip_reason(self, state: ItemState | None) -> str:
        """Why an item is not admitted ("" when it is): done for this model, removed, failed for good."""
        if state is None:
            return ""
        redo = self.opts.claim.redo
        if state.published:
            if (state.predictor, state.model_version) == self.opts.model:
                return "" if redo == "all" else "already_published"
            return "" if redo in ("model-changed", "all") else "published_by_other_model"
        if state.excluded:
            return "removed"
        if redo in ("failed", "all"):
            return ""
        if state.failed_permanently:
            return "failed_before"
        if state.transient_failures >= self.opts.claim.max_item_attempts:
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

