"""The read side of ``HubAdmin`` (``hub_admin``): the exclusion set the publish path obeys, and what
``status``, ``failures``, ``verify`` and the gallery read. Nothing here commits.

Reads name the sha they decide at (never ``revision="main"``). Coordination files come from memory,
the local download cache, or the Hub, in that order.

Costs (API calls, the Hub's 5-minute buckets; resolver calls are HEAD + GET per file):
- ``ledger_snapshot`` (status): one repo-info call for the head, one tree page per 1000 entries
  of the index folder and of ``.coord/``, and 2 resolver calls per coordination file not read
  before (index files, leases, unit done markers, ledger files). Per-client counts and done
  times are parsed from the copies that read left in the local cache: no further call, and no
  item file is ever downloaded.
- ``verify``: the same, plus one tree page per 1000 files of the repo; ``--deep`` takes LFS
  files' SHA-256 from that listing and downloads only regular (non-LFS) item files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from ..errors import StoreError
from ..ledger.shard_checks import repeated_index_ids
from ..ledger.status import DAY_S, HOUR_S, FailedItem, LedgerSnapshot, PublishEvent, iso_epoch
from ..ledger.verify import Problem, StoreView, VerifyReport, find_problems
from ..publish import layout
from ..publish.files_index import is_twin_path
from ..publish.index import decode_rows
from ..publish.index_fields import read_fields
from ..publish.layout_choice import SHARDS
from ..publish.shard_layout import INDEX_DIR, parse_shard_path
from ..records import Batch, Failure, IndexRow
from .hub_failures import fold_failures
from .hub_reads import client_activity, excluded_ids, shard_time
from .hub_state import (
    BATCH,
    DONE,
    INDEX,
    LAYOUT_PATH,
    LEASE,
    LEDGER,
    MIGRATE_MARK,
    SHARD,
    HubState,
    _quiet_tqdm,
    holder_of,
)
from .hub_sync import HubSync

log = logging.getLogger(__name__)

PATHS_INFO_CHUNK = 100
LEASE_FIXES = frozenset({"expired_lease", "lease_on_done_unit", "bad_lease"})
FIXES = LEASE_FIXES | {"orphan_file"}  # what ``HubAdmin.fix`` repairs (it never regenerates index files)


class HubAdminReads:
    """The read side of a hub store's ``StoreAdmin`` on one ``HubSync`` (one repo, one client)."""

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
        out: list[tuple[str, float | None]] = []
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
        index rows the state read fetched anyway (CPU grows with rows, calls do not). ``budgets``:
        ``publish_commits_last_hour`` counts every client's publish steps of the last hour from the
        ledger (what the fleet spends of the repo's commit quota; lease and compaction commits are
        not in it), the rest are this process's own (commits in the last hour, API calls in the last
        5 minutes, this read included): the Hub gives a repo's commit count only through its whole
        history."""
        state = self.sync.refresh()
        gone = self.excluded(state)
        done = self._done_markers(state)
        budget = self.sync.budget_report()
        records = self._records(state)
        steps = [t for t, _, _ in _publish_steps(records) if t >= now - HOUR_S]
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
            clients=client_activity(records, done, now),
            shards_pending=len(state.paths_of(SHARD)),
            done_unit_keys=tuple(sorted(state.done_units)),
            budgets={"publish_commits_last_hour": len(steps),
                     **{k: budget[k] for k in ("commits_last_hour", "commits_per_hour_limit", "api_calls_last_5min",
                                               "resolver_calls")}},
        )

    def publish_events(self) -> list[PublishEvent]:
        """Publish steps at the head: one per shard, and per (client, second) for compacted rows."""
        groups = _publish_steps(self._records(self.sync.refresh()))
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

    def _parquet_index(self, paths: list[str], sha: str) -> tuple[dict[str, dict[str, str]], list[Problem]]:
        """Id → share fields of the Parquet index files at ``sha`` (those columns only), and a problem per
        file that is not readable Parquet with them."""
        ids: dict[str, dict[str, str]] = {}
        seen: Counter[str] = Counter()
        bad: list[Problem] = []
        for path in paths:
            try:
                with open(self._download(path, sha), "rb") as fh:  # repeats counted as the local store does
                    ids.update(read_fields(fh, seen=None if is_twin_path(path) else seen))
            except (OSError, StoreError) as exc:
                bad.append(Problem("index_mismatch", path, str(exc)[:200], INDEX_DIR))
        return ids, bad + [Problem(*f) for f in repeated_index_ids(seen)]

    def _item_listing(self, state: HubState) -> tuple[dict[str, int], dict[str, str], list[str]]:
        """Size (and LFS SHA-256) of every file shaped like a per-item file (``<holder>/<id>/<id>.<ext>``)
        under a top folder that holds published items, and the Parquet index files; other files (the
        card, ``.coord/``, anything a person added beside the dataset) are not the item area and never
        orphans."""
        sync = self.sync
        entries = sync.read_at(state.sha, lambda: list(sync.api.list_repo_tree(
            sync.repo_id, recursive=True, revision=state.sha, repo_type=sync.repo_type)))
        sync.count("api", 1 + len(entries) // 1000)
        tops = {h.split("/")[0] for h in state.holders}
        sizes: dict[str, int] = {}
        lfs: dict[str, str] = {}
        parquet: list[str] = []
        for e in entries:
            parts = e.path.split("/")
            if getattr(e, "blob_id", None) is None or len(parts) < 2 or parts[0] == layout.COORD_DIR:
                continue
            if e.path.startswith(INDEX_DIR + "/") and e.path.endswith(".parquet"):
                parquet.append(e.path)
                continue
            holder = holder_of(e.path, parts[-2])
            is_shard = parse_shard_path(e.path) is not None  # a tar of the sharded layout: its rows' members
            outside = holder is None or (tops and "" not in state.holders and holder.split("/")[0] not in tops)
            if not is_shard and outside:
                continue
            sizes[e.path] = int(e.size)
            if getattr(e, "lfs", None) is not None:
                lfs[e.path] = str(e.lfs.sha256)
        return sizes, lfs, sorted(parquet)

    def _migration_leftovers(self, state: HubState) -> frozenset[str]:
        """What the last ``migrate`` commit left for its next step to delete (its marker's
        ``delete_next``: old files and item folders of items whose shards have landed)."""
        if MIGRATE_MARK not in state.entries:
            return frozenset()
        try:
            body = json.loads(self.sync.download(MIGRATE_MARK, state.sha).decode("utf-8"))
            return frozenset(str(p) for p in body.get("delete_next", []))
        except (ValueError, AttributeError, TypeError) as exc:  # then those files show as orphans
            log.warning("%s is unreadable (%s); the files it lists are checked as any other", MIGRATE_MARK, exc)
            return frozenset()

    def verify(self, now: float, deep: bool = False) -> VerifyReport:
        """Check the dataset at the head: one sha, so a concurrent publish cannot look half-done."""
        state = self.sync.refresh()
        listing, lfs, parquet = self._item_listing(state)
        index_files = {p: self._blob(state, p) for p in self._index_paths(state)}
        unreadable = [Problem("bad_lease", p, "lease file is not a valid lease", p)
                      for p in state.paths_of(LEASE) if state.parsed.get(p) is None]
        shown, bad_parquet = (self._parquet_index(parquet, state.sha)
                              if state.parsed.get(LAYOUT_PATH) == SHARDS or parquet else (None, []))
        view = StoreView(description=self.description, index_files=index_files, listing=listing,
                         leases=list(state.leases.values()), done_units=set(state.done_units),
                         ledger_problems=unreadable + bad_parquet,
                         parquet_ids=None if shown is None else set(shown), parquet_fields=shown,
                         awaiting_deletion=self._migration_leftovers(state))

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


def _publish_steps(records: list[tuple[float | None, str, str, float | None]]) -> Counter[tuple[float, str, str]]:
    """Rows per publish step ``(time, client, step)`` of the ledger's timed records."""
    groups: Counter[tuple[float, str, str]] = Counter()
    for t, client, step, _ in records:
        if t is not None:
            groups[(t, client, step)] += 1
    return groups
