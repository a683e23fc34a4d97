"""``LocalAdmin``: the operation commands on a local store (``StoreAdmin``).

Every command reads or writes the SQLite ledger through the local store's own modules
(``local_reads``, ``local_verify``, ``local_remove``, ``local_share``), with the store's locking
protocol: one ``BEGIN IMMEDIATE`` transaction per change, index files rewritten only under the
store's maintenance claim. Reads never call ``LocalStore.open()`` (``status`` and ``verify`` change
nothing, and a wrong folder is an error rather than a new empty store).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..ledger.results import GcResult, RemoveResult
from ..ledger.status import FailedItem, LedgerSnapshot, PublishEvent
from ..ledger.verify import Problem, VerifyReport
from ..records import IndexRow
from .local_ledger import connect_ledger
from .local_reads import local_failed_items, local_publish_events, local_snapshot
from .local_remove import gc_local, preview_remove_local, remove_local
from .local_share import record_local_share_fields
from .local_verify import fix_local, verify_local

if TYPE_CHECKING:
    from .local import LocalStore


class LocalAdmin:
    """``StoreAdmin`` of one ``LocalStore`` (made by ``LocalStore.admin()``)."""

    share_record_every = 1  # a ledger transaction is cheap: each late share lands at once

    def __init__(self, store: LocalStore, *, verify_settle_s: float = 2.0) -> None:
        self._store = store
        self.description = store.description
        self._settle_s = verify_settle_s

    @property
    def root(self) -> Path:
        return self._store.root

    def snapshot(self, now: float) -> LedgerSnapshot:
        return local_snapshot(self.root, self.description, now)

    def publish_events(self) -> list[PublishEvent]:
        return local_publish_events(self.root)

    def failed_items(self) -> list[FailedItem]:
        return local_failed_items(self.root)

    def rows(self) -> Iterator[IndexRow]:
        connect_ledger(self.root).close()  # a wrong folder is an error, not a new empty store
        return self._store.rows()

    def local_path(self, repo_path: str) -> Path:
        return self.root / repo_path

    def verify(self, now: float, deep: bool = False) -> VerifyReport:
        return verify_local(self.root, self._store.index_path, self.description, now, deep, settle_s=self._settle_s)

    def fix(self, report: VerifyReport, now: float) -> list[Problem]:
        return fix_local(self.root, self._store.index_path, report, now)

    def preview_remove(self, item_ids: list[str], now: float) -> RemoveResult:
        return preview_remove_local(self.root, self._store.index_path, item_ids)

    def remove(self, item_ids: list[str], reason: str, now: float) -> RemoveResult:
        """Take the items down, then refresh the dataset card (it documents how to request a removal)."""
        result = remove_local(self.root, self._store.index_path, item_ids, reason, now)
        self._ensure_open()
        self._store.write_card()
        return result

    def gc(self, now: float) -> GcResult:
        return gc_local(self.root, now)

    def update_share_fields(self, updates: dict[str, dict[str, str]], now: float) -> list[str]:
        return record_local_share_fields(self.root, updates)

    def sync_index(self) -> None:
        self._ensure_open()
        self._store.apply_index_rewrites()

    def _ensure_open(self) -> None:
        if not self._store.is_open:
            self._store.open()
