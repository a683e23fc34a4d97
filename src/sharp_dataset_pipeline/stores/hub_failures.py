"""The hub store's failed items, folded from its ledger files: parsed files in, records out (no I/O).

Failures ride in each publish step's ``.coord/batches/<yyyymmddThhmmss>-<client>-<nonce>.json``;
compaction folds those into the ledger file. Each failure carries ``at`` and ``client`` since
they were added; an older batch's time is read from its name, a compacted old one has none.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from datetime import datetime, timezone

from ..ledger.status import FailedItem
from .hub_state import LedgerDelta


def batch_time(path: str) -> float | None:
    """When a publish step's ledger batch was written, from its name; ``None`` for other files."""
    try:
        stamp = datetime.strptime(posixpath.basename(path).split("-", 1)[0], "%Y%m%dT%H%M%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def fold_failures(files: Iterable[tuple[str, LedgerDelta]], skip: frozenset[str]) -> list[FailedItem]:
    """One ``FailedItem`` per id not in ``skip`` (published or removed), from ledger ``files`` in
    order (the compacted ledger first, then the batches by time): the last failure's text and
    time, the attempts of all of them summed, the first known source kept."""
    last: dict[str, FailedItem] = {}
    for path, delta in files:
        stamped = batch_time(path)
        for f in delta.failures:
            item_id = str(f["item_id"])
            old = last.get(item_id)
            at = f.get("at")
            last[item_id] = FailedItem(
                item_id=item_id, source=str(f.get("source") or (old.source if old else "")),
                unit=str(f.get("unit", "")), stage=str(f.get("stage", "")), reason=str(f.get("reason", "")),
                detail=str(f.get("detail", "")), transient=bool(f.get("transient")),
                attempts=int(f.get("count", 1)) + (old.attempts if old else 0),
                last_at=float(at) if isinstance(at, (int, float)) else stamped,
                client=str(f.get("client", "")))
    return [last[i] for i in sorted(last) if i not in skip]
