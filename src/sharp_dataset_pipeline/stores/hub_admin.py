"""Operations on a Hub store (``HubStore.admin()``, a ``StoreAdmin``): ``status``, ``verify`` /
``verify --fix``, ``remove``, ``gc``, and file access for the gallery.

Reads name the sha they decide at (never ``revision="main"``). Every write is ONE commit through
``HubSync.run`` (compare-and-swap on the head, re-decide on 412, the governor, the unknown-outcome
rules) carrying ``.coord/progress/ops.<client>.json`` with a fresh nonce, so a lost answer can be
told apart from a commit that did not land.

Removal. A removed id is recorded in ``.coord/batches/zz-removal-<utc>-<client>-<nonce>.json`` as
a permanent failure (stage ``remove``, reason ``removed``) in the commit that deletes its files
and rewrites the index files that held its rows. Compaction keeps failures of unpublished ids
(``merge_ledgers``), so the exclusion lasts; ``item_states`` reports it as ``excluded``, publish
drops excluded ids at the head it commits on, and clients that predate removals still see a
permanent failure and never fetch the id. ``zz-`` sorts removal files after every publish-step
file, so a merge keeps the removal as the id's last word.

Costs (API calls, the Hub's 5-minute buckets; resolver calls are HEAD + GET per file):
- ``ledger_snapshot`` (status): one repo-info call for the head, one tree page per 1000 entries
  of the index folder and of ``.coord/``, and 2 resolver calls per coordination file not read
  before (index files, leases, unit done markers, ledger files). Per-client counts and done
  times are parsed from the copies that read left in the local cache: no further call, and no
  item file is ever downloaded.
- ``verify``: the same, plus one tree page per 1000 files of the repo; ``--deep`` takes LFS
  files' SHA-256 from that listing and downloads only regular (non-LFS) item files.
- ``remove`` / ``gc`` / ``fix``: the head read, one paths-info call per 100 files to delete, and
  one commit; a removal inside shards also reads what ``hub_shard_remove`` lists (the affected tars
  and Parquet files, rewritten and uploaded before that commit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import StoreError
from ..ledger.results import GcResult, RemoveResult
from ..ledger.status import DAY_S, HOUR_S, FailedItem, LedgerSnapshot, PublishEvent, iso_epoch
from ..ledger.verify import Problem, StoreView, VerifyReport, find_problems
from ..publish import layout
from ..publish.index import decode_rows
from ..publish.index_edit import update_lines
from ..publish.shard_layout import parse_shard_path
from ..records import Batch, Failure, IndexRow, Lease
from .hub_failures import fold_failures
from .hub_ops import Plan
from .hub_reads import REMOVE_STAGE, REMOVED_REASON, client_activity, excluded_ids, shard_time
from .hub_shard_remove import HubTakedown, edit_index_files, plan_hub_takedown, takedown_dir
from .hub_shards import list_index_files
from .hub_state import (
    BATCH,
    BATCH_DIR,
    DONE,
    INDEX,
    LEASE,
    LEDGER,
    PROGRESS,
    PROGRESS_DIR,
    SHARD,
    HubState,
    LedgerDelta,
    _quiet_tqdm,
    encode_ledger,
    git_blob_oid,
    holder_of,
    row_files,
    summarize_rows,
)
from .hub_sync import HubSync

log = logging.getLogger(__name__)

REMOVAL_PREFIX = "zz-removal-"
PATHS_INFO_CHUNK = 100
LEASE_FIXES = frozenset({"expired_lease", "lease_on_done_unit", "bad_lease"})
FIXES = LEASE_FIXES | {"orphan_file"}  # what ``fix`` repairs here (it never regenerates index files)


def _nonce() -> str:
    return secrets.token_hex(6)


class HubAdmin:
    """``StoreAdmin`` of a hub store: the operation commands on one ``HubSync`` (one repo, one client)."""

    share_record_every = 50  # late shares per commit (commits are the scarce resource)

    def __init__(self, sync: HubSync, description: str, client_id: str) -> None:
        self.sync = sync
        self.description = description
        self.client_id = client_id or "hub-store"
        self._blobs: dict[str, bytes] = {}  # git blob oid -> content (index files, done markers)
        self._excluded: tuple[str, frozenset[str]] = ("", frozenset())
        self._files_sha = ""  # the sha ``rows()`` read at; ``local_path`` downloads at it

    # -- exclusions on the publish path --------------------------------------------------------

    def excluded(self, state: HubState) -> frozenset[str]:
        """Excluded ids at ``state`` (computed once per sha)."""
        sha, ids = self._excluded
        if sha != state.sha:
            ids = excluded_ids(state)
            self._excluded = (state.sha, ids)
        return ids

    def without_excluded(self, state: HubState, batch: Batch, failures: list[Failure]) -> tuple[Batch, list[Failure]]:
        """``batch`` and buffered ``failures`` with every excluded id left out (decided at ``state``,
        the parent of the publish commit, so a removal that landed first always wins)."""
        gone = self.excluded(state)
        if not gone:
            return batch, failures
        kept = [pi for pi in batch.items if pi.row.id not in gone]
        if len(kept) < len(batch.items):
            log.info("not publishing %d removed items", len(batch.items) - len(kept))
        batch = replace(batch, items=kept, failures=[f for f in batch.failures if f.item_id not in gone],
                        followups=[f for f in batch.followups if f.item_id not in gone])
        return batch, [f for f in failures if f.item_id not in gone]

    # -- reads -----------------------------------------------------------------------------------

    def _blob(self, state: HubState, path: str) -> bytes:
        """A coordination file's bytes at ``state``: from memory, the local download cache, or the Hub."""
        oid = state.entries.get(path, "")
        if oid in self._blobs:
            return self._blobs[oid]
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.sync.repo_id, path, cache_dir=self.sync.reader.cache_dir,
                                        revision=state.sha, repo_type=self.sync.repo_type)
        data = Path(cached).read_bytes() if isinstance(cached, str) else self.sync.download(path, state.sha)
        if oid:
            self._blobs[oid] = data
        return data

    def _index_paths(self, state: HubState) -> list[str]:
        """The compacted index first, then the shards by name (publish time): compaction's order."""
        return state.paths_of(INDEX) + state.paths_of(SHARD)

    def _rows_at(self, state: HubState) -> Iterator[tuple[str, IndexRow]]:
        for path in self._index_paths(state):
            # Every index file in a state parsed already (a malformed one fails the state read).
            for row in decode_rows(self._blob(state, path)):
                yield path, row

    def _records(self, state: HubState) -> list[tuple[float | None, str, str, float | None]]:
        """(publish time, client, publish step, made at) per visible published item: a shard is one
        step with its name's time; compacted rows keep no steps, so their ``processed_at`` stands in."""
        gone = self.excluded(state)
        seen: set[str] = set()
        out = []
        for path, row in self._rows_at(state):
            if row.id in seen or row.id in gone:
                continue
            seen.add(row.id)
            shard = state.kind(path) == SHARD
            made = iso_epoch(row.processed_at)
            t = shard_time(path) if shard else made
            out.append((t, row.client_id or "unknown", path if shard else "", made))
        return out

    def _done_markers(self, state: HubState) -> list[tuple[str, float | None]]:
        out = []
        for path in state.paths_of(DONE):
            try:
                obj = json.loads(self._blob(state, path).decode("utf-8"))
                out.append((str(obj.get("client") or "unknown"), float(obj["at"])))
            except (ValueError, KeyError, TypeError, AttributeError):
                out.append(("unknown", None))
        return out

    def _failed(self, state: HubState, skip: frozenset[str]) -> dict[str, int]:
        """Failure reason -> items never published (the compacted ledger first, then the batches)."""
        last: dict[str, str] = {}
        for path in state.paths_of(LEDGER) + state.paths_of(BATCH):
            for f in state.parsed[path].failures:
                last[str(f["item_id"])] = str(f.get("reason", ""))
        counts = Counter(r for i, r in last.items() if i not in skip)
        return dict(sorted(counts.items()))

    def failed_items(self) -> list[FailedItem]:
        """Items that failed and were never published (removed ones left out): see ``hub_failures``."""
        state = self.sync.refresh()
        paths = state.paths_of(LEDGER) + state.paths_of(BATCH)
        return fold_failures(((p, state.parsed[p]) for p in paths), state.published | self.excluded(state))

    def snapshot(self, now: float) -> LedgerSnapshot:
        """Status aggregates at the head (cost: see the module docstring). Per-client counts parse the
        index rows the state read fetched anyway (CPU grows with rows, calls do not). ``budgets`` are
        this process's own (commits in the last hour, API calls in the last 5 minutes, this read
        included): the Hub gives a repo's commit count only through its whole history."""
        state = self.sync.refresh()
        gone = self.excluded(state)
        done = self._done_markers(state)
        budget = self.sync.budget_report()
        return LedgerSnapshot(
            store=self.description,
            taken_at=now,
            published=len(state.published - gone),
            excluded=len(gone),
            failed=self._failed(state, state.published | gone),
            units_done=len(state.done_units),
            units_done_last_hour=sum(1 for _, t in done if t is not None and t >= now - HOUR_S),
            units_done_last_day=sum(1 for _, t in done if t is not None and t >= now - DAY_S),
            leases=tuple(sorted(state.leases.values(), key=lambda le: le.unit)),
            clients=client_activity(self._records(state), done, now),
            shards_pending=len(state.paths_of(SHARD)),
            done_unit_keys=tuple(sorted(state.done_units)),
            budgets={k: budget[k] for k in ("commits_last_hour", "commits_per_hour_limit", "api_calls_last_5min",
                                            "resolver_calls")},
        )

    def publish_events(self) -> list[PublishEvent]:
        """Publish steps at the head: one per shard, and per (client, second) for compacted rows."""
        groups: Counter[tuple[float, str, str]] = Counter()
        for t, client, step, _ in self._records(self.sync.refresh()):
            if t is not None:
                groups[(t, client, step)] += 1
        return [PublishEvent(t, c, n) for (t, c, _), n in sorted(groups.items())]

    def rows(self) -> list[IndexRow]:
        """Every visible published row at the head (first row of an id wins, as in compaction)."""
        state = self.sync.refresh()
        self._files_sha = state.sha
        gone = self.excluded(state)
        seen: set[str] = set()
        out = []
        for _, row in self._rows_at(state):
            if row.id not in seen and row.id not in gone:
                seen.add(row.id)
                out.append(row)
        return out

    def local_path(self, repo_path: str) -> Path:
        """A downloaded copy of ``repo_path`` at the sha ``rows()`` read (the head if none yet)."""
        layout.check_repo_path(repo_path)
        sha = self._files_sha or self.sync.refresh().sha
        return self._download(repo_path, sha)

    def _download(self, repo_path: str, sha: str) -> Path:
        from huggingface_hub import try_to_load_from_cache

        sync = self.sync
        cached = try_to_load_from_cache(sync.repo_id, repo_path, cache_dir=sync.reader.cache_dir, revision=sha,
                                        repo_type=sync.repo_type)
        if not isinstance(cached, str):
            sync.count("resolver", 2)
            cached = sync.read_at(sha, lambda: sync.api.hf_hub_download(
                sync.repo_id, repo_path, repo_type=sync.repo_type, revision=sha, cache_dir=sync.reader.cache_dir,
                tqdm_class=_quiet_tqdm()))
        # The cache's snapshot entry is a relative symlink: callers that hard-link it need the blob.
        return Path(cached).resolve()

    def _existing(self, paths: Iterable[str], sha: str) -> list[str]:
        """Which of ``paths`` exist at ``sha`` (deleting a missing file would fail the commit)."""
        todo = sorted(set(paths))
        found: set[str] = set()
        sync = self.sync
        for start in range(0, len(todo), PATHS_INFO_CHUNK):
            chunk = todo[start:start + PATHS_INFO_CHUNK]
            sync.count("api")
            infos = sync.read_at(sha, lambda c=chunk: sync.api.get_paths_info(
                sync.repo_id, c, revision=sha, repo_type=sync.repo_type))
            found.update(i.path for i in infos if getattr(i, "blob_id", None) is not None)
        return [p for p in todo if p in found]

    # -- verify ----------------------------------------------------------------------------------

    def _item_listing(self, state: HubState) -> tuple[dict[str, int], dict[str, str]]:
        """Size (and LFS SHA-256) of every file shaped like a per-item file (``<holder>/<id>/<id>.<ext>``)
        under a top folder that holds published items; other files (the card, the index, ``.coord/``,
        anything a person added beside the dataset) are not the item area and never orphans."""
        sync = self.sync
        entries = sync.read_at(state.sha, lambda: list(sync.api.list_repo_tree(
            sync.repo_id, recursive=True, revision=state.sha, repo_type=sync.repo_type)))
        sync.count("api", 1 + len(entries) // 1000)
        tops = {h.split("/")[0] for h in state.holders}
        sizes: dict[str, int] = {}
        lfs: dict[str, str] = {}
        for e in entries:
            parts = e.path.split("/")
            if getattr(e, "blob_id", None) is None or len(parts) < 2 or parts[0] == layout.COORD_DIR:
                continue
            holder = holder_of(e.path, parts[-2])
            is_shard = parse_shard_path(e.path) is not None  # a tar of the sharded layout: its rows' members
            outside = holder is None or (tops and "" not in state.holders and holder.split("/")[0] not in tops)
            if not is_shard and outside:
                continue
            sizes[e.path] = int(e.size)
            if getattr(e, "lfs", None) is not None:
                lfs[e.path] = str(e.lfs.sha256)
        return sizes, lfs

    def verify(self, now: float, deep: bool = False) -> VerifyReport:
        """Check the dataset at the head: one sha, so a concurrent publish cannot look half-done."""
        state = self.sync.refresh()
        listing, lfs = self._item_listing(state)
        index_files = {p: self._blob(state, p) for p in self._index_paths(state)}
        unreadable = [Problem("bad_lease", p, "lease file is not a valid lease", p)
                      for p in state.paths_of(LEASE) if state.parsed.get(p) is None]
        view = StoreView(description=self.description, index_files=index_files, listing=listing,
                         leases=list(state.leases.values()), done_units=set(state.done_units),
                         ledger_problems=unreadable)

        def sha256(path: str) -> str:
            if path in lfs:  # the Hub keeps LFS files' SHA-256: no download
                return lfs[path]
            h = hashlib.sha256()
            with open(self._download(path, state.sha), "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()

        def opener(path: str) -> BinaryIO:
            return open(self._download(path, state.sha), "rb")

        report = find_problems(view, now, sha256 if deep else None, opener if deep else None)
        report.repairs = FIXES
        return report

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
        decided: list[tuple[Plan, Any]] = []

        def plan_of(state: HubState) -> Plan | None:
            out = build(state)
            if out is None:
                return None
            decided.append(out)
            return out[0]

        with self.sync.lock:
            plan, _ = self.sync.run(plan_of, max_age=0.0)
        return next((meaning for p, meaning in decided if p is plan), None)

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

    def _takedown(self, state: HubState, rows: dict[str, IndexRow], work: str) -> HubTakedown | None:
        """The shard rewrite of the removed rows that sit in shards, planned at ``state``."""
        sync = self.sync

        def parquet() -> list[str]:
            sync.count("api")
            return sorted(sync.read_at(state.sha, lambda: list_index_files(
                sync.api, sync.repo_id, sync.repo_type, state.sha)).sizes)

        every = (row for _, row in self._rows_at(state))  # lazy: read only when a row sits in a shard
        return plan_hub_takedown(rows, every, lambda p: self._download(p, state.sha), parquet,
                                 Path(work) / state.sha[:16])

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
        return self._commit(lambda state: self._plan_update(state, updates, now)) or []

    def sync_index(self) -> None:
        """Nothing to do: ``update_share_fields`` rewrote the index files in its commit."""

    def _plan_update(self, state: HubState, updates: dict[str, dict[str, str]],
                     now: float) -> tuple[Plan, list[str]] | None:
        plan = Plan(title=f"record fields of {len(updates)} items ({self.client_id})")
        done: list[str] = []
        for path in self._index_paths(state):
            hit = set(updates) & state.parsed[path].ids
            if not hit:
                continue
            data = update_lines(self._blob(state, path), {i: updates[i] for i in hit})
            plan.adds[path] = data
            plan.known[path] = (git_blob_oid(data), summarize_rows(decode_rows(data)))
            self._blobs[git_blob_oid(data)] = data
            done += sorted(hit)
        if not done:
            return None
        self._mark(plan, "update", now, {"ids": done})
        return plan, done
