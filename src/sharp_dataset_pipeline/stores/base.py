"""The Store protocol: where artifacts and the ledger live.

Both stores (``local`` and ``hub``) have the same layout and the same semantics:
- ``publish(batch)`` is one atomic step: files, index shard, failures, unit done markers and
  lease renewals land together or not at all (invariant 1), and it returns only when they did;
- ``acquire`` is a compare-and-swap (invariant 3): it returns a lease only if no other client
  holds an unexpired one; a client always gets its own lease back at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..records import Batch, Failure, Followup, ItemState, Lease, Unit


@dataclass
class PublishReceipt:
    """What a publish step did. ``commit`` is the hub's commit sha or the local shard name."""

    published_ids: list[str] = field(default_factory=list)
    commit: str = ""
    # Units whose lease another client took over (after expiry): stop renewing and never mark them done.
    lost_units: list[str] = field(default_factory=list)
    # Items that failed alone at publish time (invariant 8), recorded in this same step; the rest
    # of the batch was published. Units of such items that may be retried were not marked done.
    failed: list[Failure] = field(default_factory=list)
    units_held: list[str] = field(default_factory=list)
    # Published ids whose earlier row (and files) this step replaced (``Batch.redo``).
    replaced_ids: list[str] = field(default_factory=list)


@dataclass
class UnitStatus:
    done: bool = False
    lease: Lease | None = None
    # (predictor, model version) -> items of the unit published by it: a done unit is done only for
    # the models that made its items (``run --redo model-changed`` reopens it for another one).
    models: dict[tuple[str, str], int] = field(default_factory=dict)
    failed: int = 0  # items of the unit that failed and are not published (``run --redo failed``)


class Store(Protocol):
    description: str

    def open(self) -> None:
        """Create the layout if missing and repair what a crash left half-done."""
        ...

    def close(self) -> None: ...

    def acquire(self, unit: Unit, client_id: str, ttl_s: float, reopen: bool = False) -> Lease | None:
        """A lease on ``unit``, or None; a done unit only when ``reopen`` (``run --redo``)."""
        ...

    def renew(self, unit_keys: Iterable[str], client_id: str, ttl_s: float) -> None: ...

    def release(self, unit_keys: Iterable[str], client_id: str) -> None: ...

    def unit_status(self, unit_keys: Iterable[str]) -> dict[str, UnitStatus]: ...

    def item_states(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        """Known state of each id (absent ids are unknown: never seen)."""
        ...

    def publish(self, batch: Batch) -> PublishReceipt: ...

    def record_failures(self, failures: list[Failure], client_id: str) -> None: ...

    def compact(self) -> int:
        """Merge index shards into the index file; returns the number of rows in it."""
        ...

    def pending_followups(self, kind: str) -> list[Followup]:
        """Followups recorded by publish steps and not yet marked done (any client's)."""
        ...

    def complete_followups(self, done: list[Followup]) -> None:
        """Mark followups done (the hub store may carry this on the next publish commit)."""
        ...
