"""Index compaction of a Hub store: index shards merged into the compacted index and ledger deltas into
the ledger (the Parquet index too in the sharded layout, the card refreshed if its facts change), in
one compare-and-swap commit; run every ``auto_compact_shards`` batches, staggered per client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..publish import layout
from ..publish.card import CardFacts
from ..publish.index import decode_rows
from ..publish.layout_choice import SHARDS
from ..publish.predecessor_index import PREDECESSOR_INDEX_HINT, holds_predecessor_rows
from .hub_ops import Plan, plan_compact
from .hub_shards import IndexFiles, add_index_compaction, list_index_files
from .hub_state import BATCH, LEDGER, SHARD, HubState
from .hub_sync import HubSync
from .shard_packer import ShardPacker

log = logging.getLogger(__name__)


class HubCompaction:
    """Compaction of ``HubStore`` (one repo, one client)."""

    api: Any
    repo_id: str
    repo_type: str
    index_path: str
    layout: str
    _sync: HubSync
    _packer: ShardPacker
    _auto_compact: int
    _card: CardFacts | None
    _card_update: Callable[..., CardFacts | None]
    _render_card: Callable[..., str]

    def _maybe_compact(self, state: HubState, client: str) -> None:
        if self._auto_compact <= 0:
            return
        # A per-client offset spreads the clients, so usually one of them compacts at a time.
        offset = int.from_bytes(client.encode()[-2:] or b"\0", "big") % max(1, self._auto_compact // 4)
        if len(state.paths_of(SHARD)) < self._auto_compact + offset:
            return
        try:
            self.compact()
        except StoreError as exc:  # the batch itself landed; compaction can wait
            log.warning("automatic index compaction failed (a later publish retries it): %s", exc)

    def compact(self) -> int:
        """Merge index shards into ``index_path`` and ledger deltas into the ledger, deleting the
        merged files, in one compare-and-swap commit. Returns the rows in the index."""

        def build(state: HubState) -> Plan | None:
            index_rows = []
            if self.index_path in state.entries:
                raw = self._sync.download(self.index_path, state.sha)
                if holds_predecessor_rows(raw):  # rewritten in our shape, its own fields would be lost
                    raise StoreError(f"not compacting {self.index_path}: {PREDECESSOR_INDEX_HINT}")
                index_rows = decode_rows(raw)
            shards = {p: decode_rows(self._sync.download(p, state.sha)) for p in state.paths_of(SHARD)}
            ledgers = {p: state.parsed[p] for p in state.paths_of(LEDGER, BATCH)}
            plan = plan_compact(state, index_rows, shards, ledgers, self.index_path)
            if plan is not None and self.layout == SHARDS:  # the Parquet index, in the same commit
                found = self._sync.read_at(state.sha, lambda: self._index_files(state.sha))
                add_index_compaction(plan, found, lambda p: self._sync.download(p, state.sha),
                                     self._packer.scratch(state.sha))
            card = self._card_update([*index_rows, *(r for rows in shards.values() for r in rows)], everything=True)
            if plan is not None and card is not None:
                plan.adds[layout.README_PATH] = self._render_card(card).encode("utf-8")
                refreshed.append(card)
            return plan

        refreshed: list[CardFacts] = []
        try:
            with self._sync.lock:
                plan, state = self._sync.run(build, max_age=0.0)
        finally:
            self._packer.clear()
        if plan is not None and refreshed:
            self._card = refreshed[-1]
        if plan is None:
            return len(state.published)
        log.debug("compacted the index of %s: %d rows", self.repo_id, plan.rows)
        return plan.rows

    def _index_files(self, sha: str) -> IndexFiles:
        found = list_index_files(self.api, self.repo_id, self.repo_type, sha)
        self._sync.count("api", 1 + len(found.sizes) // 1000)  # the Hub pages trees at 1000 entries
        return found
