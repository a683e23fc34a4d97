"""Operations on a Hub store (``HubStore.admin()``, a ``StoreAdmin``): ``status``, ``verify`` /
``verify --fix``, ``remove``, ``gc``, and file access for the gallery. The reads (status, verify,
rows, the exclusion set) are ``HubAdminReads`` in ``hub_admin_reads``; this module holds the writes.

Every write is ONE commit through ``HubSync.run`` (compare-and-swap on the head, re-decide on 412,
the governor, the unknown-outcome rules) carrying ``.coord/progress/ops.<client>.json`` with a fresh
nonce, so a lost answer can be told apart from a commit that did not land.

Removal. A removed id is recorded in ``.coord/batches/zz-removal-<utc>-<client>-<nonce>.json`` as
a permanent failure (stage ``remove``, reason ``removed``) in the commit that deletes its files
and rewrites the index files that held its rows. Compaction keeps failures of unpublished ids
(``merge_ledgers``), so the exclusion lasts; ``item_states`` reports it as ``excluded``, publish
drops excluded ids at the head it commits on, and clients that predate removals still see a
permanent failure and never fetch the id. ``zz-`` sorts removal files after every publish-step
file, so a merge keeps the removal as the id's last word.

Costs (API calls, the Hub's 5-minute buckets): the reads' are in ``hub_admin_reads``.
``remove`` / ``gc`` / ``fix``: the head read, one paths-info call per 100 files to delete, and
one commit; a removal inside shards also reads what ``hub_shard_remove`` lists (the affected tars
and Parquet files, rewritten and uploaded before that commit). ``update_share_fields`` (late share
results): one commit with the JSONL index files holding the rows and, in the sharded layout, the
Parquet index files holding them (the step's pending shard, or every part once it was merged),
downloaded, rewritten with the new fields (``publish.index_fields``) and uploaded before the commit.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..ledger.results import GcResult, RemoveResult
from ..ledger.verify import Problem, VerifyReport
from ..publish import layout
from ..publish.index import decode_rows
from ..publish.index_edit import update_lines
from ..publish.index_fields import read_fields, rewrite_fields, stale_fields
from ..records import IndexRow, Lease
from .hub_admin_reads import LEASE_FIXES, HubAdminReads
from .hub_ops import Plan
from .hub_reads import REMOVE_STAGE, REMOVED_REASON
from .hub_shard_remove import (
    HubTakedown,
    add_replacement,
    edit_index_files,
    index_candidates,
    plan_hub_takedown,
    takedown_dir,
)
from .hub_shards import list_index_files
from .hub_state import (
    BATCH,
    BATCH_DIR,
    LEASE,
    PROGRESS,
    PROGRESS_DIR,
    HubState,
    LedgerDelta,
    encode_ledger,
    git_blob_oid,
    row_files,
    summarize_rows,
)

log = logging.getLogger(__name__)

REMOVAL_PREFIX = "zz-removal-"


def _nonce() -> str:
    return secrets.token_hex(6)


class HubAdmin(HubAdminReads):
    """``StoreAdmin`` of a hub store: the operation commands on one ``HubSync`` (one repo, one client)."""

    share_record_every = 50  # late shares per commit (commits are the scarce resource)

    # -- writes ----------------------------------------------------------------------------------

    def _mark(self, plan: Plan, action: str, now: float, detail: dict[str, Any]) -> None:
        """The commit's unique file: what this operation did, by whom, when (and a fresh nonce)."""
        path = f"{PROGRESS_DIR}/{layout.safe_client('ops.' + self.client_id)}.json"
        body = {"client": self.client_id, "action": action, "at": now, "nonce": _nonce(), **detail}
        plan.add_known(path, (json.dumps(body, sort_keys=True) + "\n").encode("utf-8"), PROGRESS)
        plan.marker = path

    def _commit(self, build: Callable[[HubState], tuple[Plan, Any] | None]) -> Any:
        """Run ``build`` (plan + what it means) through the compare-and-swap loop; the meaning of the
        plan that landed, or None when nothing was left to do."""
        return self.sync.run_decided(build)[0]

    def _lease_paths(self, state: HubState) -> dict[str, str]:
        return {lease.unit: p for p in state.paths_of(LEASE) if (lease := state.parsed.get(p)) is not None}

    def gc(self, now: float) -> GcResult:
        """Delete expired leases and leases on done units in one commit (decided at the head)."""

        def build(state: HubState) -> tuple[Plan, GcResult] | None:
            result = GcResult()
            plan = Plan(title=f"gc: drop stale leases ({self.client_id})")
            for unit, path in sorted(self._lease_paths(state).items()):
                lease: Lease = state.parsed[path]
                if unit in state.done_units:
                    result.on_done_units.append(lease)
                elif lease.expired(now):
                    result.expired.append(lease)
                else:
                    continue
                plan.deletes.append(path)
            if not plan.deletes:
                return None
            self._mark(plan, "gc", now, {"leases": len(plan.deletes)})
            return plan, result

        result = self._commit(build) or GcResult()
        log.debug("gc: %d expired leases, %d leases on done units removed from %s", len(result.expired),
                 len(result.on_done_units), self.description)
        return result

    def fix(self, report: VerifyReport, now: float) -> list[Problem]:
        """Repair orphan files and stale or malformed leases in one commit; each is re-checked at the
        head first (a file a row points at now, or a lease renewed meanwhile, is left alone)."""
        orphans = [p for p in report.problems if p.kind == "orphan_file"]
        leases = [p for p in report.problems if p.kind in LEASE_FIXES]
        if not (orphans or leases):
            return []

        def build(state: HubState) -> tuple[Plan, list[Problem]] | None:
            plan = Plan(title=f"verify --fix ({self.client_id})")
            fixed = self._fix_leases(state, leases, now, plan)
            if orphans:
                referenced = {p for _, row in self._rows_at(state) for p in row_files(row)}
                candidates = {p.target: p for p in orphans if p.target not in referenced}
                for path in self._existing(candidates, state.sha):
                    plan.deletes.append(path)
                    fixed.append(candidates[path])
            if not plan.deletes:
                return None
            self._mark(plan, "verify-fix", now, {"fixed": len(fixed)})
            return plan, fixed

        fixed = self._commit(build) or []
        log.info("fixed %d of %d repairable problems in %s", len(fixed), len(orphans) + len(leases), self.description)
        return fixed

    def _fix_leases(self, state: HubState, problems: list[Problem], now: float, plan: Plan) -> list[Problem]:
        paths = self._lease_paths(state)
        fixed = []
        for p in problems:
            path = p.target if p.target.startswith(layout.COORD_DIR + "/") else paths.get(p.target, "")
            if not path or path not in state.entries or path in plan.deletes:
                continue
            lease = state.parsed.get(path)
            if p.kind == "bad_lease":
                still = lease is None or lease.expires_at < lease.acquired_at
            elif lease is None:
                still = False
            elif p.kind == "lease_on_done_unit":
                still = lease.unit in state.done_units
            else:
                still = lease.expired(now)
            if still:
                plan.deletes.append(path)
                fixed.append(p)
        return fixed

    def remove(self, item_ids: list[str], reason: str, now: float) -> RemoveResult:
        """Take ids down in ONE commit: their files deleted (or their samples cut out of their shards),
        the index files that held their rows rewritten without them, and their exclusion recorded (see
        the module docstring and ``hub_shard_remove``)."""
        ids = sorted({layout.check_item_id(i) for i in item_ids})
        if not ids:
            raise StoreError("remove: no item id given")
        reason = reason.strip() or "removal requested"
        with takedown_dir(self.sync.reader.cache_dir) as work:
            result = self._commit(lambda state: self._plan_remove(state, set(ids), reason, now, work))
        if result is None:  # every id was excluded before and has no row left
            result = RemoveResult(already_removed=ids)
        log.debug("removed %d items (%d more ids excluded) from %s: %s", len(result.removed), len(result.blocked),
                 self.description, reason)
        return result

    def preview_remove(self, item_ids: list[str], now: float) -> RemoveResult:
        """What ``remove`` would do at the head now (``dry_run``); commits nothing (in the sharded layout
        the affected tars are downloaded and rewritten locally, to say what the commit would carry)."""
        ids = sorted({layout.check_item_id(i) for i in item_ids})
        if not ids:
            raise StoreError("remove: no item id given")
        with takedown_dir(self.sync.reader.cache_dir) as work:
            out = self._plan_remove(self.sync.refresh(), set(ids), "preview", now, work)
        result = out[1] if out is not None else RemoveResult(already_removed=ids)
        result.dry_run = True
        return result

    def _parquet_files(self, state: HubState) -> list[str]:
        """The Parquet index files at ``state`` (one paged listing of ``data/index``)."""
        sync = self.sync
        sync.count("api")
        return sorted(sync.read_at(state.sha, lambda: list_index_files(
            sync.api, sync.repo_id, sync.repo_type, state.sha)).sizes)

    def _takedown(self, state: HubState, rows: dict[str, IndexRow], work: str) -> HubTakedown | None:
        """The shard rewrite of the removed rows that sit in shards, planned at ``state``."""
        every = (row for _, row in self._rows_at(state))  # lazy: read only when a row sits in a shard
        return plan_hub_takedown(rows, every, lambda p: self._download(p, state.sha),
                                 lambda: self._parquet_files(state), Path(work) / state.sha[:16])

    def replace_in_shards(self, state: HubState, plan: Plan, old: dict[str, IndexRow], work: str) -> None:
        """``run --redo`` in shards: the old samples of the rows ``plan`` replaces (``old``, as read at
        ``state``) leave their tars and Parquet files in the same commit (``add_replacement``)."""
        add_replacement(plan, state, self._takedown(state, old, work), lambda p: self._blob(state, p),
                        self._index_paths(state), self._blobs)

    def _plan_remove(self, state: HubState, ids: set[str], reason: str,
                     now: float, work: str) -> tuple[Plan, RemoveResult] | None:
        gone = self.excluded(state)
        plan = Plan(title=f"remove {len(ids)} items ({self.client_id})")
        rows: dict[str, IndexRow] = {}
        files: set[str] = set()
        for path in self._index_paths(state):
            if ids & state.parsed[path].ids:
                for row in decode_rows(self._blob(state, path)):
                    if row.id in ids:
                        rows.setdefault(row.id, row)
                        files.update(row_files(row))
        takedown = self._takedown(state, rows, work)
        updates = takedown.updates if takedown else {}
        rewritten = edit_index_files(state, plan, ids, updates, lambda p: self._blob(state, p),
                                     self._index_paths(state), self._blobs)
        deleted = self._existing(files, state.sha)
        plan.deletes.extend(deleted)
        if takedown:
            takedown.add_to(plan)
            deleted += takedown.takedown.deleted + sorted(p for p, new in takedown.index.items() if new is None)
            rewritten += sorted(p for p, new in takedown.index.items() if new is not None)
        new = sorted(ids - gone)
        if new:
            failures = tuple({"item_id": i, "unit": rows[i].unit if i in rows else "", "stage": REMOVE_STAGE,
                              "reason": REMOVED_REASON, "detail": reason[:500], "transient": False, "count": 1}
                             for i in new)
            name = f"{REMOVAL_PREFIX}{layout.utc_stamp(now)}-{layout.safe_client(self.client_id)}-{_nonce()}"
            plan.add_known(f"{BATCH_DIR}/{name}.json", encode_ledger(LedgerDelta(failures=failures),
                                                                    client=self.client_id, at=now, reason=reason),
                           BATCH)
        if not (plan.adds or plan.deletes):
            return None
        self._mark(plan, "remove", now, {"ids": sorted(ids)})
        result = RemoveResult(removed=sorted(rows), blocked=[i for i in new if i not in rows],
                              already_removed=sorted(i for i in ids & gone if i not in rows),
                              files_deleted=deleted, index_files_rewritten=rewritten,
                              shards_rewritten=takedown.rewritten_shards if takedown else [])
        return plan, result

    def update_share_fields(self, updates: dict[str, dict[str, str]], now: float) -> list[str]:
        """Merge ``updates[id]`` into published rows, rewriting the index files that hold them, in ONE
        commit (``share --missing`` records late shares this way). Returns the ids updated."""
        with takedown_dir(self.sync.reader.cache_dir) as work:
            return self._commit(lambda state: self._plan_update(state, updates, now, work)) or []

    def sync_index(self) -> None:
        """Nothing to do: ``update_share_fields`` rewrote the index files in its commit."""

    def _plan_update(self, state: HubState, updates: dict[str, dict[str, str]],
                     now: float, work: str) -> tuple[Plan, list[str]] | None:
        plan = Plan(title=f"record fields of {len(updates)} items ({self.client_id})")
        done: list[str] = []
        changed: dict[str, IndexRow] = {}
        for path in self._index_paths(state):
            hit = set(updates) & state.parsed[path].ids
            if not hit:
                continue
            data = update_lines(self._blob(state, path), {i: updates[i] for i in hit})
            plan.adds[path] = data
            rows = decode_rows(data)
            plan.known[path] = (git_blob_oid(data), summarize_rows(rows))
            self._blobs[git_blob_oid(data)] = data
            changed.update((r.id, r) for r in rows if r.id in hit)
            done += sorted(hit)
        if not done:
            return None
        plan.adds.update(self._index_field_updates(state, changed, Path(work) / state.sha[:16]))
        self._mark(plan, "update", now, {"ids": done})
        return plan, done

    def _index_field_updates(self, state: HubState, rows: dict[str, IndexRow], work: Path) -> dict[str, Path]:
        """The Parquet index files holding ``rows`` (sharded layout) rewritten with their new late fields
        (``index_fields``), to ride on the same commit as the JSONL edits: path → the new file."""
        sharded = [r for r in rows.values() if r.shard_path or r.ply_shard_path]
        if not sharded:
            return {}
        out: dict[str, Path] = {}
        work.mkdir(parents=True, exist_ok=True)
        for n, path in enumerate(index_candidates(sharded, self._parquet_files(state))):
            source = self._download(path, state.sha)
            with source.open("rb") as fh:
                updates = stale_fields(read_fields(fh), rows)
            if not updates:
                continue
            new = work / f"fields-{n:04d}.parquet"
            with source.open("rb") as src, new.open("wb") as dst:
                rewrite_fields(src, updates, dst)
            out[path] = new
        return out
