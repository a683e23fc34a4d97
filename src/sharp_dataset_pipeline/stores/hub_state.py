"""The coordination state of a Hub repo at one commit sha.

``HubState`` is an immutable view of the files that coordinate clients at one sha: the index
(compacted file + shards, from which the done set is built), leases, unit done markers and ledger
deltas (failures, followups). Per-item files are not listed: the index says where they are.

``StateReader`` is the I/O side: it lists the index folder and ``.coord/`` at a known sha and
downloads only contents it has not parsed before (a cache keyed by git blob oid, so an unchanged
file is never fetched twice and a client's own writes are never fetched at all). Reads always name
the sha: never ``revision="main"``, which the client library may answer from a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..ledger.leases import decode_lease
from ..publish import layout
from ..publish.index import decode_rows, row_files
from ..records import Followup, IndexRow, Lease
from .hub_errors import folder_missing

log = logging.getLogger(__name__)

LEASE_DIR = posixpath.dirname(posixpath.dirname(layout.lease_path("x")))
DONE_DIR = posixpath.dirname(posixpath.dirname(layout.unit_done_path("x")))
BATCH_DIR = f"{layout.COORD_DIR}/batches"
LEDGER_PATH = f"{layout.COORD_DIR}/ledger.json"
PROGRESS_DIR = f"{layout.COORD_DIR}/progress"
# The last ``migrate`` commit's marker: its ``delete_next`` lists old files the next step deletes.
MIGRATE_MARK = f"{PROGRESS_DIR}/ops.migrate.json"
LAYOUT_PATH = f"{layout.COORD_DIR}/layout.json"  # {"layout": "shards" | "files"}, written when a dataset is new

INDEX, SHARD, LEASE, DONE, BATCH, LEDGER, PROGRESS, LAYOUT, OTHER = (
    "index", "shard", "lease", "done", "batch", "ledger", "progress", "layout", "other")
# Contents a decision needs; progress files are only read for a status display.
EAGER_KINDS = frozenset({INDEX, SHARD, LEASE, DONE, BATCH, LEDGER, LAYOUT})


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 the Hub lists as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def folder_exists(api: Any, repo_id: str, repo_type: str, sha: str, folder: str) -> bool:
    """Whether ``folder`` holds anything at ``sha``: the first page of its tree listing (paths-info
    need not list folders, so it is not asked)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return next(iter(api.list_repo_tree(repo_id, folder, revision=sha, repo_type=repo_type)), None) is not None
    except HfHubHTTPError as exc:
        if not folder_missing(exc):
            raise
        return False


def lfs_pointer_oid(data: bytes) -> str:
    """The oid the Hub lists for ``data`` stored through LFS: the git blob sha1 of its pointer file.
    Which files go through LFS is the server's choice (patterns, size), so both oids are possible."""
    sha256 = hashlib.sha256(data).hexdigest()
    return git_blob_oid(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode())


def classify(path: str, index_path: str) -> str:
    """Which kind of coordination file ``path`` is (``other`` for anything we do not read)."""
    if path == index_path:
        return INDEX
    folder, name = posixpath.split(path)
    if folder == posixpath.dirname(index_path) and layout.is_shard_name(index_path, name):
        return SHARD
    if path.startswith(LEASE_DIR + "/") and path.endswith(".json"):
        return LEASE
    if path.startswith(DONE_DIR + "/") and path.endswith(".json"):
        return DONE
    if path.startswith(BATCH_DIR + "/") and path.endswith(".json"):
        return BATCH
    if path == LEDGER_PATH:
        return LEDGER
    if path == LAYOUT_PATH:
        return LAYOUT
    if path.startswith(PROGRESS_DIR + "/"):
        return PROGRESS
    return OTHER


@dataclass(frozen=True)
class IndexSummary:
    """What the state needs from one index file: ids, and how full the item folders are."""

    ids: frozenset[str]
    files: int
    holders: Mapping[str, int]  # folder holding item folders -> item folders in it (from this file)
    made_by: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> (unit, predictor, model)
    unit_models: Mapping[str, Mapping[tuple[str, str], int]] = field(default_factory=dict)  # unit -> model -> n


@dataclass(frozen=True)
class LedgerDelta:
    """Failures and followups recorded by one publish step (or merged by compaction)."""

    failures: tuple[dict[str, Any], ...] = ()
    followups: tuple[Followup, ...] = ()
    followups_done: tuple[tuple[str, str], ...] = ()


holder_of = layout.holder_of  # the layout's rule (stores and ops import it from here too)


def summarize_rows(rows: Iterable[IndexRow]) -> IndexSummary:
    ids: set[str] = set()
    files = 0
    holders: Counter[str] = Counter()
    made_by: dict[str, tuple[str, str, str]] = {}
    tars: set[str] = set()  # sharded layout: the tars these rows point into (files shared by many rows)
    for row in rows:
        ids.add(row.id)
        tars.update(p for p in (row.shard_path, row.ply_shard_path) if p)
        made_by[row.id] = (row.unit, row.predictor, row.model_version)
        paths = row_files(row)
        files += len(paths)
        for h in {h for h in (holder_of(p, row.id) for p in paths) if h is not None}:
            holders[h] += 1
    files += len(tars)
    unit_models: dict[str, dict[tuple[str, str], int]] = {}
    for unit, predictor, model in made_by.values():
        found = unit_models.setdefault(unit, {})
        found[(predictor, model)] = found.get((predictor, model), 0) + 1
    return IndexSummary(frozenset(ids), files, dict(holders), made_by, unit_models)


def encode_ledger(delta: LedgerDelta, **extra: Any) -> bytes:
    data = {
        **extra,
        "failures": list(delta.failures),
        "followups": [{"kind": f.kind, "item_id": f.item_id, "payload": f.payload} for f in delta.followups],
        "followups_done": [{"kind": k, "item_id": i} for k, i in delta.followups_done],
    }
    return (json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode()


def decode_ledger(data: bytes) -> LedgerDelta:
    try:
        obj = json.loads(data.decode("utf-8"))
        failures = tuple(dict(f) for f in obj.get("failures", []))
        client, at = str(obj.get("client", "")), float(obj.get("at", 0.0) or 0.0)
        followups = tuple(Followup(f["kind"], f["item_id"], f.get("payload", ""), client, at)
                          for f in obj.get("followups", []))
        done = tuple((f["kind"], f["item_id"]) for f in obj.get("followups_done", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(f"malformed ledger file: {exc}") from exc
    return LedgerDelta(failures, followups, done)


def parse_content(kind: str, data: bytes) -> Any:
    """Parse a coordination file; a malformed lease reads as absent (anyone may take it over)."""
    if kind in (INDEX, SHARD):
        return summarize_rows(decode_rows(data))
    if kind == LEASE:
        try:
            return decode_lease(data)
        except StoreError as exc:
            log.warning("ignoring a malformed lease file: %s", exc)
            return None
    if kind == DONE:
        try:
            return str(json.loads(data.decode("utf-8"))["unit"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"malformed unit done marker: {exc}") from exc
    if kind in (BATCH, LEDGER):
        return decode_ledger(data)
    if kind == LAYOUT:
        try:
            return str(json.loads(data.decode("utf-8"))["layout"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"malformed layout marker {LAYOUT_PATH}: {exc}") from exc
    if kind == PROGRESS:
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            return {}
    return None


@dataclass(frozen=True)
class FailureTally:
    transient: int = 0
    permanent: bool = False


@dataclass(frozen=True)
class HubState:
    """Coordination files at ``sha``: ``entries`` maps path -> blob oid, ``parsed`` path -> content."""

    sha: str
    index_path: str
    entries: Mapping[str, str]
    parsed: Mapping[str, Any] = field(repr=False)
    read_at: float = 0.0

    def kind(self, path: str) -> str:
        return classify(path, self.index_path)

    def paths_of(self, *kinds: str) -> list[str]:
        return sorted(p for p in self.entries if self.kind(p) in kinds)

    @cached_property
    def published(self) -> frozenset[str]:
        out: set[str] = set()
        for path in self.paths_of(INDEX, SHARD):
            out |= self.parsed[path].ids
        return frozenset(out)

    @cached_property
    def index_paths(self) -> list[str]:
        """The compacted index and the index shards at this sha."""
        return self.paths_of(INDEX, SHARD)

    def made_by(self, item_id: str) -> tuple[str, str, str] | None:
        """(unit, predictor, model version) of the published row of ``item_id`` (per index file, so a
        state after each commit costs nothing until asked)."""
        for path in self.index_paths:
            found = self.parsed[path].made_by.get(item_id)
            if found is not None:
                return found
        return None

    def index_files_of(self, ids: Iterable[str]) -> list[str]:
        """The index files (compacted index, shards) that hold a row of any of ``ids``."""
        wanted = set(ids)
        return [p for p in self.paths_of(INDEX, SHARD) if wanted & self.parsed[p].ids]

    def unit_models(self, unit: str) -> dict[tuple[str, str], int]:
        """{(predictor, model version): published items of ``unit``}."""
        out: dict[tuple[str, str], int] = {}
        for path in self.index_paths:
            for model, n in self.parsed[path].unit_models.get(unit, {}).items():
                out[model] = out.get(model, 0) + n
        return out

    @cached_property
    def unit_failed(self) -> dict[str, int]:
        """unit -> items that failed and are not published."""
        ids: dict[str, set[str]] = {}
        for path in self.paths_of(LEDGER, BATCH):
            for f in self.parsed[path].failures:
                if f["item_id"] not in self.published:
                    ids.setdefault(str(f.get("unit", "")), set()).add(f["item_id"])
        return {unit: len(found) for unit, found in ids.items()}

    @cached_property
    def leases(self) -> dict[str, Lease]:
        out: dict[str, Lease] = {}
        for path in self.paths_of(LEASE):
            lease = self.parsed.get(path)
            if lease is not None:
                out[lease.unit] = lease
        return out

    @cached_property
    def done_units(self) -> frozenset[str]:
        return frozenset(self.parsed[p] for p in self.paths_of(DONE))

    @cached_property
    def failures(self) -> dict[str, FailureTally]:
        tally: dict[str, FailureTally] = {}
        for path in self.paths_of(LEDGER, BATCH):
            for f in self.parsed[path].failures:
                old = tally.get(f["item_id"], FailureTally())
                count = int(f.get("count", 1))
                if f.get("transient"):
                    tally[f["item_id"]] = FailureTally(old.transient + count, old.permanent)
                else:
                    tally[f["item_id"]] = FailureTally(old.transient, True)
        return tally

    @cached_property
    def pending_followups(self) -> list[Followup]:
        recorded: dict[tuple[str, str], Followup] = {}
        done: set[tuple[str, str]] = set()
        for path in self.paths_of(LEDGER, BATCH):
            delta = self.parsed[path]
            for f in delta.followups:
                recorded.setdefault((f.kind, f.item_id), f)
            done.update(delta.followups_done)
        return [f for key, f in sorted(recorded.items()) if key not in done]

    @cached_property
    def holders(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for path in self.paths_of(INDEX, SHARD):
            out.update(self.parsed[path].holders)
        return out

    @cached_property
    def file_count(self) -> int:
        """Files in the repo: per-item files from the index, plus the listed coordination files."""
        rows = sum(self.parsed[p].files for p in self.paths_of(INDEX, SHARD))
        return rows + len(self.entries) + 2  # README.md and .gitattributes

    def with_commit(self, sha: str, adds: Mapping[str, tuple[str, Any]], deletes: Iterable[str],
                    now: float) -> HubState:
        """The state after a commit of ours on top of this one (the CAS made it the only change)."""
        entries = dict(self.entries)
        parsed = dict(self.parsed)
        for path in deletes:
            entries.pop(path, None)
            parsed.pop(path, None)
        for path, (oid, content) in adds.items():
            entries[path] = oid
            parsed[path] = content
        return HubState(sha, self.index_path, entries, parsed, now)


def _quiet_tqdm() -> type:
    """A progress bar class that never draws: coordination reads must not scribble on the display."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Quiet(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Quiet


class StateReader:
    """Reads ``HubState`` at a sha through ``HfApi``; ``count(kind, n)`` tallies the calls made."""

    def __init__(self, api: Any, repo_id: str, repo_type: str, index_path: str, cache_dir: Path,
                 count: Callable[[str, int], None], clock: Callable[[], float]) -> None:
        self.api, self.repo_id, self.repo_type = api, repo_id, repo_type
        self.index_path = index_path
        self.cache_dir = cache_dir
        self._count = count
        self._clock = clock
        self._cache: dict[tuple[str, str], Any] = {}

    def remember(self, kind: str, oid: str, content: Any) -> None:
        """Seed the cache with content this client wrote itself (never downloaded back)."""
        self._cache[(kind, oid)] = content

    def list_files(self, sha: str) -> dict[str, str]:
        """path -> oid of the index folder (not recursive) and ``.coord/`` (recursive) at ``sha``."""
        out: dict[str, str] = {}
        index_dir = posixpath.dirname(self.index_path)
        for folder, recursive in ((index_dir, False), (layout.COORD_DIR, True)):
            out.update(self._list(sha, folder or None, recursive))
        return out

    def _list(self, sha: str, folder: str | None, recursive: bool) -> dict[str, str]:
        from huggingface_hub.errors import HfHubHTTPError

        out: dict[str, str] = {}
        seen = 0
        try:
            for entry in self.api.list_repo_tree(self.repo_id, folder, recursive=recursive, revision=sha,
                                                 repo_type=self.repo_type):
                seen += 1
                oid = getattr(entry, "blob_id", None)
                if oid is not None:
                    out[entry.path] = oid
        except HfHubHTTPError as exc:
            if not folder_missing(exc):
                raise
            # the folder does not exist yet at this sha
        finally:
            self._count("api", 1 + seen // 1000)  # the Hub pages trees at 1000 entries
        return out

    def read(self, sha: str) -> HubState:
        """The state at ``sha``: list, then fetch only contents not seen before."""
        listed = self.list_files(sha)
        parsed: dict[str, Any] = {}
        entries: dict[str, str] = {}
        for path, oid in listed.items():
            kind = classify(path, self.index_path)
            if kind == OTHER:
                continue
            entries[path] = oid
            if kind not in EAGER_KINDS:
                continue
            key = (kind, oid)
            if key not in self._cache:
                self._cache[key] = parse_content(kind, self.download(path, sha))
            parsed[path] = self._cache[key]
        return HubState(sha, self.index_path, entries, parsed, self._clock())

    def download(self, path: str, sha: str) -> bytes:
        """One file's bytes at ``sha`` (a resolver call; the pinned sha makes any cache hit exact)."""
        self._count("resolver", 2)  # HEAD for metadata, then GET
        local = self.api.hf_hub_download(self.repo_id, path, repo_type=self.repo_type, revision=sha,
                                         cache_dir=self.cache_dir, tqdm_class=_quiet_tqdm())
        return Path(local).read_bytes()
