"""The Source protocol: a deterministic enumeration cut into units of ``range_size`` items."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from ..records import Followup, Item, SkippedInput, Unit


class Source(Protocol):
    """A deterministic, restartable enumeration of items.

    ``units()`` yields units in a fixed order (the same on every machine and every run, for
    the same input); ``items(unit)`` yields that unit's items in order. Ids are stable across
    runs so that the ledger can tell what is done.
    """

    name: str
    range_size: int

    def units(self) -> Iterator[Unit]: ...

    def items(self, unit: Unit) -> Iterator[Item]: ...

    def skipped_counts(self) -> dict[str, int]:
        """Inputs the source itself skipped (e.g. non-image files), by reason."""
        ...

    def total_items(self) -> int | None:
        """How many items the source enumerates, once known without reading them (a folder's
        listing, a manifest's rows, a feed's ``X-Total``); None while or when unknown. For display."""
        ...

    def set_wait_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (in the thread reading ``items``) before the source blocks for long, e.g.
        for a rate-limit window, so the consumer can hand on the items it already holds first."""
        ...

    def set_skip_hook(self, hook: Callable[[SkippedInput], None]) -> None:
        """Call ``hook`` (in the thread reading ``items``) for each input of a unit that ``items``
        skips because it repeats an earlier one, so the run can record which one it repeats."""
        ...

    # Hooks a run wires up (``SourceHooks`` gives the no-op versions a plain source inherits).
    followup_kind: str  # kind of the followups it owes after publish ("": none)

    def complete_followups(self, followups: list[Followup]) -> list[Followup]:
        """Carry out owed followups (e.g. Unsplash download tracking); returns those now settled."""
        ...

    def set_known_ids(self, known_ids: Callable[[list[str]], set[str]] | None) -> None:
        """Ids the ledger already settled, so the source can skip them before spending on them."""
        ...

    def set_stop_requested(self, stop_requested: Callable[[], bool]) -> None:
        """A run stopping: a source waiting on a rate limit gives up."""
        ...

    def release_items(self, item_ids: Iterable[str]) -> None:
        """Items that will not be published (failed, dropped): free what the source reserved for them."""
        ...


class SourceHooks:
    """The run hooks of ``Source`` for a source that needs none: no followups, nothing to skip early."""

    followup_kind = ""

    def complete_followups(self, followups: list[Followup]) -> list[Followup]:
        return []

    def set_known_ids(self, known_ids: Callable[[list[str]], set[str]] | None) -> None:
        return None

    def set_stop_requested(self, stop_requested: Callable[[], bool]) -> None:
        return None

    def release_items(self, item_ids: Iterable[str]) -> None:
        return None


def unit_bounds(index: int, range_size: int) -> tuple[int, int]:
    """The ``[start, stop)`` offsets of unit number ``index``."""
    return index * range_size, (index + 1) * range_size


def unit_key(prefix: str, start: int, stop: int, width: int = 6) -> str:
    """A stable unit key such as ``folder/ab12cd/000000-000299`` (inclusive last offset)."""
    return f"{prefix}/{start:0{width}d}-{stop - 1:0{width}d}"
