"""A complete store held in memory: ``Store`` and ``StoreAdmin`` (stores/base.py) and nothing else.

It exists to show that a new store needs only the two protocols: ``status``, ``verify``, ``remove``
and ``gc`` (the ops functions) run on it unchanged. One process, one lock; files are bytes in a
dict, their "local paths" copies written under ``scratch``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sharp_dataset_pipeline.ledger.leases import may_take, new_lease
from sharp_dataset_pipeline.ledger.results import GcResult, RemoveResult
from sharp_dataset_pipeline.ledger.status import ClientActivity, FailedItem, LedgerSnapshot, PublishEvent
from sharp_dataset_pipeline.ledger.verify import Problem, StoreView, VerifyReport, find_problems
from sharp_dataset_pipeline.publish.index import encode_rows, row_file_refs
from sharp_dataset_pipeline.records import Batch, Failure, Followup, IndexRow, ItemState, Lease, Unit
from sharp_dataset_pipeline.stores.base import PublishPacing, PublishReceipt, UnitStatus

INDEX = "train.jsonl"  # the one index "file": every visible row, in publish order


@dataclasses.dataclass
class _Books:
    rows: dict[str, IndexRow] = dataclasses.field(default_factory=dict)
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    leases: dict[str, Lease] = dataclasses.field(default_factory=dict)
    done: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)  # unit -> (client, at)
    failures: dict[str, tuple[Failure, str, float]] = dataclasses.field(default_factory=dict)
    excluded: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)
    events: list[PublishEvent] = dataclasses.field(default_factory=list)
    followups: list[Followup] = dataclasses.field(default_factory=list)


class MemoryStore:
    """``Store`` in memory."""

    def __init__(self, scratch: Path, clock: Callable[[], float] = time.time, commits_per_hour: int = 0) -> None:
        """``commits_per_hour`` > 0 plays a store with a commit budget (publish steps sized by it)."""
        self.description = "memory:"
        self.layout = "files"  # items are kept with the files post-processing named
        self.commits_per_hour = commits_per_hour
        self.books = _Books()
        self.lock = threading.Lock()
        self.clock = clock
        self._admin = MemoryAdmin(self, scratch)

    def admin(self) -> MemoryAdmin:
        return self._admin

    def budget_report(self) -> dict[str, Any]:
        return {}

    def publish_pacing(self) -> PublishPacing:
        """The budget given, and each client's last publish step from this store's events."""
        with self.lock:
            last: dict[str, float] = {}
            for e in self.books.events:
                last[e.client] = max(last.get(e.client, e.t), e.t)
            return PublishPacing(self.commits_per_hour, last, self.clock())

    def open(self) -> None: ...

    def close(self) -> None: ...

    def acquire(self, unit: Unit, client_id: str, ttl_s: float, reopen: bool = False) -> Lease | None:
        with self.lock:
            now = self.clock()
            if (unit.key in self.books.done and not reopen) or not may_take(self.books.leases.get(unit.key),
                                                                              client_id, now):
                return None
            lease = new_lease(unit.key, client_id, now, ttl_s, secrets.token_hex(4))
            self.books.leases[unit.key] = lease
            return lease

    def renew(self, unit_keys: Iterable[str], client_id: str, ttl_s: float) -> None:
        with self.lock:
            for key in unit_keys:
                le = self.books.leases.get(key)
                if le is not None and le.owner == client_id:
                    self.books.leases[key] = dataclasses.replace(le, expires_at=self.clock() + ttl_s)

    def release(self, unit_keys: Iterable[str], client_id: str) -> None:
        with self.lock:
            for key in unit_keys:
                if key in self.books.leases and self.books.leases[key].owner == client_id:
                    del self.books.leases[key]

    def unit_status(self, unit_keys: Iterable[str]) -> dict[str, UnitStatus]:
        with self.lock:
            return {k: UnitStatus(done=k in self.books.done, lease=self.books.leases.get(k)) for k in unit_keys}

    def item_states(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        out = {}
        with self.lock:
            for i in item_ids:
                row, failure = self.books.rows.get(i), self.books.failures.get(i)
                if row or failure or i in self.books.excluded:
                    out[i] = ItemState(published=row is not None, excluded=i in self.books.excluded,
                                       failed_permanently=bool(failure and not failure[0].transient))
        return out

    def publish(self, batch: Batch) -> PublishReceipt:
        """One step under the lock: files, rows, failures and done units land together."""
        receipt = PublishReceipt(commit=f"step-{len(self.books.events)}")
        with self.lock:
            now = self.clock()
            for pi in batch.items:
                if pi.row.id in self.books.rows or pi.row.id in self.books.excluded:
                    continue
                for f in pi.files:
                    self.books.files[f.repo_path] = Path(f.local_path).read_bytes()
                self.books.rows[pi.row.id] = dataclasses.replace(pi.row, client_id=batch.client_id)
                receipt.published_ids.append(pi.row.id)
            self._record(batch.failures, batch.client_id, now)
            self.books.done.update({u: (batch.client_id, now) for u in batch.units_done})
            if receipt.published_ids:
                self.books.events.append(PublishEvent(now, batch.client_id, len(receipt.published_ids)))
        return receipt

    def record_failures(self, failures: list[Failure], client_id: str) -> None:
        with self.lock:
            self._record(failures, client_id, self.clock())

    def _record(self, failures: list[Failure], client_id: str, now: float) -> None:
        for f in failures:
            self.books.failures[f.item_id] = (f, client_id, now)

    def compact(self) -> int:
        return len(self.books.rows)

    def pending_followups(self, kind: str) -> list[Followup]:
        return [f for f in self.books.followups if f.kind == kind]

    def complete_followups(self, done: list[Followup]) -> None:
        self.books.followups = [f for f in self.books.followups if f not in done]


class MemoryAdmin:
    """``StoreAdmin`` of a ``MemoryStore``."""

    share_record_every = 1

    def __init__(self, store: MemoryStore, scratch: Path) -> None:
        self.store, self.books, self.scratch = store, store.books, scratch
        self.description = store.description

    def snapshot(self, now: float) -> LedgerSnapshot:
        b = self.books
        with self.store.lock:
            failed: dict[str, int] = {}
            for f, _, _ in b.failures.values():
                if f.item_id not in b.rows:
                    failed[f.reason] = failed.get(f.reason, 0) + 1
            clients = sorted({r.client_id for r in b.rows.values()})
            return LedgerSnapshot(
                store=self.description, taken_at=now, published=len(b.rows), excluded=len(b.excluded),
                failed=failed, units_done=len(b.done), leases=tuple(sorted(b.leases.values(), key=lambda x: x.unit)),
                clients=tuple(ClientActivity(client=c, published=sum(r.client_id == c for r in b.rows.values()))
                              for c in clients),
                done_unit_keys=tuple(sorted(b.done)))

    def publish_events(self) -> list[PublishEvent]:
        return list(self.books.events)

    def failed_items(self) -> list[FailedItem]:
        return [FailedItem(f.item_id, f.source, f.unit, f.stage, f.reason, f.detail, f.transient, 1, at, client)
                for f, client, at in self.books.failures.values() if f.item_id not in self.books.rows]

    def rows(self) -> Iterator[IndexRow]:
        return iter(list(self.books.rows.values()))

    def local_path(self, repo_path: str) -> Path:
        path = self.scratch / repo_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.books.files[repo_path])
        return path

    def verify(self, now: float, deep: bool = False) -> VerifyReport:
        b = self.books
        with self.store.lock:
            view = StoreView(description=self.description, index_files={INDEX: encode_rows(list(b.rows.values()))},
                             listing={p: len(d) for p, d in b.files.items()}, leases=list(b.leases.values()),
                             done_units=set(b.done))
            files = dict(b.files)
        hasher = (lambda p: hashlib.sha256(files[p]).hexdigest()) if deep else None
        return find_problems(view, now, hasher)

    def fix(self, report: VerifyReport, now: float) -> list[Problem]:
        fixed = []
        with self.store.lock:
            referenced = {ref.path for row in self.books.rows.values() for ref in row_file_refs(row)}
            for p in report.problems:
                if p.kind == "orphan_file" and p.target not in referenced:
                    self.books.files.pop(p.target, None)
                elif p.kind in ("expired_lease", "lease_on_done_unit", "bad_lease"):
                    self.books.leases.pop(p.target, None)
                else:
                    continue
                fixed.append(p)
        return fixed

    def preview_remove(self, item_ids: list[str], now: float) -> RemoveResult:
        ids = sorted(set(item_ids))
        rows = [self.books.rows[i] for i in ids if i in self.books.rows]
        return RemoveResult(removed=[r.id for r in rows],
                            already_removed=[i for i in ids if i in self.books.excluded],
                            blocked=[i for i in ids if i not in self.books.rows and i not in self.books.excluded],
                            files_deleted=sorted(ref.path for r in rows for ref in row_file_refs(r)),
                            index_files_rewritten=[INDEX] if rows else [], dry_run=True)

    def remove(self, item_ids: list[str], reason: str, now: float) -> RemoveResult:
        with self.store.lock:
            result = dataclasses.replace(self.preview_remove(item_ids, now), dry_run=False)
            for i in result.removed + result.blocked:
                self.books.excluded.setdefault(i, (reason, now))
                self.books.rows.pop(i, None)
            for path in result.files_deleted:
                self.books.files.pop(path, None)
        return result

    def gc(self, now: float) -> GcResult:
        result = GcResult()
        with self.store.lock:
            for unit, le in sorted(self.books.leases.items()):
                if unit in self.books.done:
                    result.on_done_units.append(le)
                elif le.expired(now):
                    result.expired.append(le)
                else:
                    continue
                del self.books.leases[unit]
        return result

    def update_share_fields(self, updates: dict[str, dict[str, str]], now: float) -> list[str]:
        with self.store.lock:
            found = [i for i in updates if i in self.books.rows]
            for i in found:
                self.books.rows[i] = dataclasses.replace(self.books.rows[i], **updates[i])
        return found

    def sync_index(self) -> None: ...
