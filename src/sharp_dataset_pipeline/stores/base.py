"""The store contract: ``Store`` (what a run needs) and ``StoreAdmin`` (what the operation commands need).

A new store implements these two protocols and is added to ``factories.make_store``; nothing else
changes (``tests/stores/memory_store.py`` is a complete example).

Both stores (``local`` and ``hub``) have the same layout and the same semantics:
- ``publish(batch)`` is one atomic step: files, index shard, failures, unit done markers and
  lease renewals land together or not at all (invariant 1), and it returns only when they did;
- ``acquire`` is a compare-and-swap (invariant 3): it returns a lease only if no other client
  holds an unexpired one; a client always gets its own lease back at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..ledger.results import GcResult, RemoveResult
from ..ledger.status import FailedItem, LedgerSnapshot, PublishEvent
from ..ledger.verify import Problem, VerifyReport
from ..publish.shard_pack import PackedBatch
from ..records import Batch, Failure, Followup, IndexRow, ItemState, Lease, Unit


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


@dataclass(frozen=True)
class PublishPacing:
    """What a store knows that sizes publish steps (``publish/batch_sizing``): its commit budget and when
    each client last published, from its ledger.

    ``commits_per_hour`` 0: the store has no commit budget (the local store), so the publisher keeps
    its fixed batch size. ``last_publish`` maps a client id to the wall-clock time (the store's clock)
    of its last publish step the store has seen; ``now`` is that clock when this was read.
    ``own_commits``: when this client's own commits of the last hour landed, every kind (publish steps,
    leases, releases, compaction, the card), so its share of an hour counts them all.
    """

    commits_per_hour: int = 0
    last_publish: Mapping[str, float] = field(default_factory=dict)
    now: float = 0.0
    own_commits: tuple[float, ...] = ()


@dataclass
class UnitStatus:
    done: bool = False
    lease: Lease | None = None
    # (predictor, model version) -> items of the unit published by it: a done unit is done only for
    # the models that made its items (``run --redo model-changed`` reopens it for another one).
    models: dict[tuple[str, str], int] = field(default_factory=dict)
    failed: int = 0  # items of the unit that failed and are not published (``run --redo failed``)


class StoreAdmin(Protocol):
    """The operation commands on one store: ``status``, ``failures``, ``verify [--fix]``, ``remove``,
    ``gc``, the gallery and ``share --missing``. Made by ``Store.admin()``; works on a store that was
    not opened (``status`` and ``verify`` never write; a mistyped hub repo is not created)."""

    description: str
    # How many late share results ``share --missing`` gathers per ``update_share_fields`` call
    # (1: each lands at once; the hub store batches them, commits being the scarce resource).
    share_record_every: int

    def snapshot(self, now: float) -> LedgerSnapshot:
        """Aggregates of the whole dataset at ``now`` (``status``); never reads every row."""
        ...

    def publish_events(self) -> list[PublishEvent]:
        """Every publish step still known (time, client, items), for the gallery's run report."""
        ...

    def failed_items(self) -> list[FailedItem]:
        """Items that failed and were never published (removed ones left out)."""
        ...

    def rows(self) -> Iterable[IndexRow]:
        """Every published, non-removed index row."""
        ...

    def local_path(self, repo_path: str) -> Path:
        """A local path with the bytes of a published file (the file itself, or a downloaded copy)."""
        ...

    def verify(self, now: float, deep: bool = False) -> VerifyReport:
        """Every inconsistency found (``deep``: compare SHA-256 too)."""
        ...

    def fix(self, report: VerifyReport, now: float) -> list[Problem]:
        """Repair what is safe among ``report``'s problems, in one step; returns those fixed."""
        ...

    def preview_remove(self, item_ids: list[str], now: float) -> RemoveResult:
        """What ``remove`` would do now (``dry_run`` set); changes nothing."""
        ...

    def remove(self, item_ids: list[str], reason: str, now: float) -> RemoveResult:
        """Take items down (files, index rows) and exclude their ids for good."""
        ...

    def gc(self, now: float) -> GcResult:
        """Delete expired leases and leases on done units."""
        ...

    def update_share_fields(self, updates: dict[str, dict[str, str]], now: float) -> list[str]:
        """Record late share fields (``gsplat_*``) on published rows; returns the ids found."""
        ...

    def sync_index(self) -> None:
        """Bring the index files in line with rows updated by ``update_share_fields``."""
        ...


class Store(Protocol):
    description: str
    # "shards" or "files" (``publish.layout_choice``): decided by ``open`` from the dataset itself.
    layout: str

    def admin(self) -> StoreAdmin:
        """The operation commands on this store (the same object on every call)."""
        ...

    def budget_report(self) -> dict[str, Any]:
        """Use of a rate-limited backend for the run summary; empty when the store has none."""
        ...

    def publish_pacing(self) -> PublishPacing:
        """The commit budget and each client's last publish time (cheap: from a recent state, at most a
        few small reads); a store without a commit budget answers ``commits_per_hour=0``."""
        ...

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


@dataclass
class MigrationStep:
    """What one ``migrate --to shards`` step landed: the items now in shards, the shard files it
    added, and the old per-item files it deleted (those of earlier steps, whose shards had landed)."""

    migrated_ids: list[str] = field(default_factory=list)
    shard_files: list[str] = field(default_factory=list)
    deleted: int = 0
    commit: str = ""


class ShardMigration(Protocol):
    """A store's side of ``migrate --to shards`` (``ops/migrate.py`` drives it).

    Each ``land_step`` is ONE atomic store step: the packed shards and the step's index shard are
    added and the items' files-layout rows replaced by their shard rows (hub: one commit; local:
    one ledger transaction). Old per-item files are deleted only once the shards holding them have
    landed (a later step, or ``finish``). A step that did not land left nothing a reader sees, and
    a rerun recognises the rows already in shards (``IndexRow.shard_path``)."""

    description: str
    step_items: int  # items per step by default (the hub's is bounded by files per commit)

    @property
    def layout(self) -> str:
        """The dataset's layout now: ``files`` until ``finish`` records ``shards``."""
        ...

    def rows(self) -> list[IndexRow]:
        """Every published row, in either layout (a predecessor index's rows converted)."""
        ...

    def local_path(self, repo_path: str) -> Path:
        """A local path with the bytes of one of ``rows()``'s files."""
        ...

    def land_step(self, packed: PackedBatch, old_rows: list[IndexRow]) -> MigrationStep:
        """Add ``packed`` (its items' rows replace ``old_rows``) in one atomic step."""
        ...

    def finish(self) -> MigrationStep:
        """Delete the old files still left of migrated rows and record the ``shards`` layout."""
        ...
