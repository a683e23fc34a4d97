"""``sharp-dataset status``: the whole dataset's state, from ledger aggregates only.

Every store gives a ``LedgerSnapshot`` through ``StoreAdmin.snapshot(now)`` (the local store's is
read from its SQLite ledger by ``stores/local_reads.py``); this module adds the source's units for
the ETA and builds the report, which is pure.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable

from ..ledger.status import (
    LedgerSnapshot,
    PublishEvent,
    SourceUnits,
    StatusReport,
    build_status,
)
from ..records import Unit
from ..stores.base import StoreAdmin

log = logging.getLogger(__name__)

UNIT_COUNT_CAP = 1_000_000  # beyond this a source is treated as unbounded for the ETA


def take_snapshot(admin: StoreAdmin, now: float) -> LedgerSnapshot:
    """The store's snapshot at ``now`` (a local store is read without ``open()``: status never
    repairs or writes anything)."""
    return admin.snapshot(now)


def count_units(units: Iterable[Unit], cap: int = UNIT_COUNT_CAP) -> int | None:
    """How many units a source has; ``None`` when it has more than ``cap`` (treated as unbounded)."""
    n = sum(1 for _ in itertools.islice(units, cap + 1))
    return None if n > cap else n


_RANGE_RE = re.compile(r"(p?)(\d+)-(p?)(\d+)$")


def unit_prefix(key: str) -> str:
    """The part of a unit key that names the source (``folder/<hash>`` of ``folder/<hash>/000000-000299``)."""
    return key.rsplit("/", 1)[0]


def ledger_range_size(keys: Iterable[str], prefix: str, per_page: int) -> int | None:
    """The range size the runs used on the source ``prefix``, read from the ledger's unit keys.

    A key ends in its inclusive offset range (``000010-000019``: 10 items) or, for a search, its
    page range (``p011-p020``: 10 pages of ``per_page``). A source's last unit may be cut short,
    so the largest range wins; ``None`` when the ledger has no unit of that source.
    """
    best = 0
    for key in keys:
        if unit_prefix(key) != prefix:
            continue
        match = _RANGE_RE.search(key)
        if match is None:
            continue
        span = int(match.group(4)) - int(match.group(2)) + 1
        best = max(best, span * per_page if match.group(1) == "p" else span)
    return best or None


def source_units(units: Iterable[Unit], done: Iterable[str], range_size: int,
                 cap: int = UNIT_COUNT_CAP) -> SourceUnits | None:
    """The source's units against the ledger's done set; ``None`` when it has more than ``cap``."""
    done_keys = set(done)
    total = finished = left = 0
    for unit in itertools.islice(units, cap + 1):
        total += 1
        if unit.key in done_keys:
            finished += 1
        else:
            left += max(0, unit.stop - unit.start)
    if total > cap:
        return None
    return SourceUnits(total=total, done=finished, items_left=left, range_size=range_size)


def dataset_status(admin: StoreAdmin, now: float, units_total: int | None = None, *,
                   source: SourceUnits | None = None) -> StatusReport:
    """Status of the store at ``now``; ``source`` (or a bare ``units_total``) enables the ETA."""
    return build_status(take_snapshot(admin, now), units_total, source=source)


def publish_events(admin: StoreAdmin) -> list[PublishEvent]:
    """Every publish step of the dataset (time, client, items); empty when the store keeps none."""
    return list(admin.publish_events())
