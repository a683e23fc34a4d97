"""``push`` onto a Hub store: a local store's shard tars as they are, in bounded compare-and-swap commits.

Each push commit is one intent through ``HubSync.run``, so it follows the Hub store's rules: the
tars (and the step's Parquet index shard) are uploaded with ``preupload_lfs_files`` before the
commit and never re-sent by a retry; 409 waits, 412 re-decides at the new head, 429 pauses,
5xx / a lost answer is settled by reading the head and looking for the commit's unique file
(``.coord/progress/ops.<client>.json`` with a fresh nonce). One commit carries:

- the step's tars, byte for byte the local files, at their local paths (deterministic digests, so
  a step that landed before a kill is found again at the target: its rows are there);
- a new JSONL index shard with the rows, and a Parquet index shard of the same rows (previews
  read out of the local tars, each member checked by its sha256);
- the dataset card, when the rows bring sources or predictors it does not name yet, or the first
  PLY tars (its ``ply`` config), as a publish step refreshes it;
- the done markers of the local units whose last rows this commit lands (the done set carried
  over: a later ``run`` on the Hub store leases none of them and publishes none of their items);
- (the first commit) the local failure records of ids the target has none for, as a ledger batch
  (``.coord/batches/<stamp>-<client>-<nonce>.json``, as a publish step records failures), so
  ``failures`` lists them there and a run there skips an item that failed for good here;
- (the first commit) the local removals, as the Hub store's removal record
  (``.coord/batches/zz-removal-…``, as ``remove`` writes it), so no client publishes them there;
  an id the target has published is left to a ``remove`` there (a push never deletes rows).

Decided at the parent of each attempt: rows whose ids the target has already (published there by a
run, or an earlier push) or has removed are left out; a commit left with no rows carries no tars
(they would be orphans) but still its done markers. The repo must be new or sharded
(``layout_at_head`` reads that without writing anything).
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StoreError
from ..ledger.status import FailedItem
from ..publish import layout
from ..publish.card import CardFacts
from ..publish.index import encode_rows
from ..publish.layout_choice import PREDECESSOR_DIR, SHARDS
from ..publish.parquet_index import entry_of_row, row_members, write_index
from ..publish.shard_layout import PLY_DIR, batch_digest, index_shard_path
from ..publish.shard_read import member_bytes
from ..publish.transfer_plan import RowRef
from ..records import IndexRow
from .hub import HubStore
from .hub_admin import REMOVAL_PREFIX
from .hub_ops import Plan
from .hub_reads import REMOVE_STAGE, REMOVED_REASON
from .hub_shards import repo_layout
from .hub_state import (
    BATCH,
    BATCH_DIR,
    DONE,
    PROGRESS,
    PROGRESS_DIR,
    HubState,
    LedgerDelta,
    encode_ledger,
    folder_exists,
    git_blob_oid,
    summarize_rows,
)

log = logging.getLogger(__name__)

PREVIEW_FIELD = "webp"  # shard_pack's member field of the preview


@dataclass(frozen=True)
class PushCommit:
    """What one push commit is asked to carry: shard files, the rows that point into them, done units."""

    shards: tuple[str, ...]
    rows: tuple[RowRef, ...]  # the full rows are read from the source when the commit is made
    units_done: tuple[str, ...] = ()
    removed: tuple[tuple[str, str], ...] = ()  # (id, reason) of the local removals
    failures: tuple[FailedItem, ...] = ()  # local failure records (one per item and unit) of unpublished ids


@dataclass(frozen=True)
class Holdings:
    """What a push target holds: ids published and ids removed there, units done there."""

    published: frozenset[str]
    removed: frozenset[str]
    units_done: frozenset[str]

    @property
    def has(self) -> frozenset[str]:
        """Ids a push leaves out: published or removed at the target."""
        return self.published | self.removed


@dataclass
class PushOutcome:
    """What one push commit did (``commit`` empty: nothing was left to do at the target)."""

    published: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the target had them already (or removed them)
    units_done: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # local removals recorded at the target
    failures: list[str] = field(default_factory=list)  # ids whose local failure records were carried over
    shards: list[str] = field(default_factory=list)
    tar_bytes: int = 0
    commit: str = ""
    card: tuple[CardFacts, bool] | None = None  # the refreshed card this commit carried


class HubPushTarget:
    """The push side of one opened ``HubStore``: what it holds, and one commit per push step.

    ``local_file`` maps a repo path of the source dataset to its local file; ``rows_of`` reads the
    source's full rows of some ids (in their order), a commit's worth at a time."""

    def __init__(self, store: HubStore, local_file: Callable[[str], Path],
                 rows_of: Callable[[Sequence[str]], list[IndexRow]], work_dir: Path,
                 clock: Callable[[], float]) -> None:
        self._store, self._admin = store, store.admin()
        self._sync = self._admin.sync
        self._local_file, self._rows_of, self._work_dir, self._clock = local_file, rows_of, work_dir, clock
        self._client = self._admin.client_id
        self._index_files: dict[str, Path] = {}  # digest of a row set -> its Parquet index shard

    @staticmethod
    def layout_at_head(store: HubStore) -> str | None:
        """The layout of ``store``'s repo as it is now (None: no such repo), read without any write."""
        from huggingface_hub.errors import RepositoryNotFoundError

        sync = store.admin().sync
        try:
            sync.api_call(lambda: sync.api.repo_info(sync.repo_id, repo_type=sync.repo_type), missing_ok=True)
        except RepositoryNotFoundError:
            return None
        state = sync.refresh()

        def predecessor() -> bool:
            return bool(sync.api_call(lambda: folder_exists(
                sync.api, sync.repo_id, sync.repo_type, state.sha, PREDECESSOR_DIR)))

        return repo_layout(state, "", predecessor, SHARDS)[0]

    def holdings(self) -> Holdings:
        """What the target holds at the head."""
        state = self._sync.refresh()
        return Holdings(state.published, self._admin.excluded(state), state.done_units)

    def budget_report(self) -> dict[str, object]:
        return self._store.budget_report()

    def commit(self, step: PushCommit) -> PushOutcome:
        """Land ``step`` in one commit (or find it landed); what the target had already is left out."""
        rows = self._rows_of([r.id for r in step.rows])
        try:
            outcome, state = self._sync.run_decided(lambda st: self._plan(st, step, rows))
        finally:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._index_files.clear()
        if outcome is None:
            return PushOutcome(skipped=[r.id for r in step.rows])
        outcome.commit = state.sha
        if outcome.card is not None:
            self._store.card_landed(outcome.card)
        self._sync.count("published_items", len(outcome.published))
        return outcome

    def _plan(self, state: HubState, step: PushCommit, step_rows: list[IndexRow]) -> tuple[Plan, PushOutcome] | None:
        gone = self._admin.excluded(state)
        have = state.published | gone
        rows = [r for r in step_rows if r.id not in have]
        units = [u for u in dict.fromkeys(step.units_done) if u not in state.done_units]
        removed = [(i, why) for i, why in step.removed if i not in have]
        # Carried once: an id the target has a failure record for (carried before, or failed there) is left out.
        failed = [f for f in step.failures if f.item_id not in have and f.item_id not in state.failures]
        if not rows and not units and not removed and not failed:
            return None
        now, nonce = self._clock(), secrets.token_hex(6)
        out = PushOutcome(published=[r.id for r in rows], skipped=[r.id for r in step.rows if r.id in have],
                          units_done=units, removed=[i for i, _ in removed],
                          failures=sorted({f.item_id for f in failed}))
        plan = Plan(title=f"push {len(rows)} items, {len(step.shards) if rows else 0} shards ({self._client})")
        if rows:
            for path in step.shards:
                local = self._local_file(path)
                if not local.is_file():
                    raise StoreError(f"push: {path} is missing from the local store (run verify on it)")
                plan.adds[path] = local
                out.tar_bytes += local.stat().st_size
            out.shards = list(step.shards)
            digest = batch_digest(f"push.{self._client}", out.published)
            plan.adds[index_shard_path(digest)] = self._index_file(digest, rows)
            shard = layout.shard_path(self._store.index_path, self._client, now, nonce)
            data = encode_rows(rows)
            plan.adds[shard] = data
            plan.known[shard] = (git_blob_oid(data), summarize_rows(rows))
            plan.published_ids = list(out.published)
            plan.rows = len(rows)
            # The card names the pushed rows' sources and predictors, and the ``ply`` config with PLY tars.
            card = self._store.card_refresh(rows, any(p.startswith(PLY_DIR + "/") for p in step.shards))
            if card is not None:
                plan.adds[layout.README_PATH] = card[0]
                out.card = card[1]
        if removed:
            self._add_removals(plan, removed, now, nonce)
        if failed:
            self._add_failures(plan, failed, now, nonce)
        for unit in units:
            marker = {"unit": unit, "client": self._client, "at": now, "nonce": nonce, "by": "push"}
            plan.add_known(layout.unit_done_path(unit), (json.dumps(marker, sort_keys=True) + "\n").encode(), DONE)
        progress = {"client": self._client, "action": "push", "at": now, "nonce": nonce, "items": len(rows),
                    "units_done": len(units), "removed": len(removed), "failures": len(failed)}
        path = f"{PROGRESS_DIR}/{layout.safe_client('ops.' + self._client)}.json"
        plan.add_known(path, (json.dumps(progress, sort_keys=True) + "\n").encode(), PROGRESS)
        plan.marker = path
        return plan, out

    def _add_removals(self, plan: Plan, removed: list[tuple[str, str]], now: float, nonce: str) -> None:
        """The local removals as the Hub store's removal record (``HubAdmin.remove`` writes the same)."""
        failures = tuple({"item_id": i, "unit": "", "stage": REMOVE_STAGE, "reason": REMOVED_REASON,
                          "detail": why[:500], "transient": False, "count": 1} for i, why in removed)
        name = f"{REMOVAL_PREFIX}{layout.utc_stamp(now)}-{layout.safe_client(self._client)}-{nonce}.json"
        plan.add_known(f"{BATCH_DIR}/{name}", encode_ledger(LedgerDelta(failures=failures), client=self._client,
                                                           at=now, reason="removed in the pushed local store"),
                       BATCH)

    def _add_failures(self, plan: Plan, failed: list[FailedItem], now: float, nonce: str) -> None:
        """The local failure records as a ledger batch, as a publish step records its failures: when and
        by whom each was recorded is kept, and a record counts the attempts its local one counted."""
        records = tuple({"item_id": f.item_id, "unit": f.unit, "stage": f.stage, "reason": f.reason,
                         "detail": f.detail[:500], "transient": f.transient, "count": max(1, f.attempts),
                         "source": f.source, "at": f.last_at if f.last_at is not None else now,
                         "client": f.client or self._client} for f in failed)
        name = f"{layout.utc_stamp(now)}-{layout.safe_client(self._client)}-{nonce}.json"
        plan.add_known(f"{BATCH_DIR}/{name}", encode_ledger(LedgerDelta(failures=records), client=self._client,
                                                           at=now, reason="carried over by push"), BATCH)

    def _index_file(self, digest: str, rows: list[IndexRow]) -> Path:
        """The Parquet index shard of ``rows`` (built once per row set: a 412 that leaves the set
        unchanged reuses it, and so its upload)."""
        found = self._index_files.get(digest)
        if found is not None:
            return found
        entries = []
        for row in rows:
            preview = next((m for m in row_members(row) if m.field == PREVIEW_FIELD), None)
            data = member_bytes(self._local_file(preview.shard), preview) if preview is not None else None
            entries.append(entry_of_row(row, data, f"{row.shard_key}.{PREVIEW_FIELD}" if data is not None else None))
        self._work_dir.mkdir(parents=True, exist_ok=True)
        path = self._work_dir / f"{digest}.parquet"
        with path.open("wb") as fh:
            write_index(entries, fh)
        self._index_files[digest] = path
        return path

