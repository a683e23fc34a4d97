"""The Hub store's files-layout Parquet index: each JSONL index file's twin, in the commit that changes it.

The local store's twins (``local_files_index``) are made after the fact; on the Hub a twin rides on
the very commit that adds, rewrites or deletes its JSONL index file, so at every head each JSONL file
has the twin made from its lines (``publish.files_index``). ``HubSync`` calls ``finish`` on every
plan it is about to send (publish steps, compaction, ``remove``, ``share``, migration steps, ``push``),
so no operation carries its own Parquet edit. Where a twin is missing at the parent (a dataset made
before the twins), the commit that next touches an index file makes every missing one, so the
card's ``index`` config never shows part of the rows.

A twin's previews come from, in order: the files the plan itself uploads (a publish step), the twins
being replaced (read at the parent: compaction and ``remove`` move rows, not bytes), then downloads of
the preview files, at most ``fetch_cap`` per commit (an old dataset's thumbnails fill in over its next
commits; a row past the cap is kept with a null preview until its file's next rebuild).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..fsio import atomic_write
from ..publish.files_index import FILES_INDEX_DIR, is_twin_path, preview_ref, twin_entries, twin_path
from ..publish.index import FileRef, decode_rows
from ..publish.layout_choice import FILES
from ..publish.parquet_index import read_index, write_index
from .hub_errors import folder_missing
from .hub_ops import Plan
from .hub_state import INDEX, LAYOUT_PATH, SHARD, HubState

log = logging.getLogger(__name__)

INLINE_TWIN_BYTES = 1 << 20
DEFAULT_FETCH_CAP = 64  # preview downloads per commit for rows no twin or upload holds

Download = Callable[[str, str], bytes]  # (repo path, sha) -> bytes
ListTwins = Callable[[str], list[str]]  # sha -> twin paths present there


class HubFilesIndex:
    """The plan finisher of a files-layout Hub store (see the module docstring)."""

    def __init__(self, index_path: str, work_dir: Path, download: Download, list_twins: ListTwins,
                 layout: Callable[[], str], fetch_cap: int = DEFAULT_FETCH_CAP) -> None:
        self.index_path, self.work_dir = index_path, work_dir
        self._download, self._list_twins, self._layout = download, list_twins, layout
        self.fetch_cap = fetch_cap

    def _layout_after(self, plan: Plan) -> str:
        if LAYOUT_PATH in plan.known:
            return str(plan.known[LAYOUT_PATH][1])
        return self._layout()

    def finish(self, plan: Plan, state: HubState) -> None:
        """Add to ``plan`` the twins of the JSONL index files it changes (and the missing ones), and
        delete those of the JSONL files it deletes; a plan that records the shards layout deletes them all."""
        after = self._layout_after(plan)
        if after != FILES and LAYOUT_PATH not in plan.known:
            return
        jsonl_added = [p for p in plan.adds if state.kind(p) in (INDEX, SHARD)]
        if after == FILES and not jsonl_added and not any(state.kind(p) in (INDEX, SHARD) for p in plan.deletes):
            return  # no index file changes: every twin stays true (and the listing is not paid)
        present = set(self._list_twins(state.sha))
        if after != FILES:  # migrated: the sharded layout's index holds every row
            if not state.index_paths:
                return  # a new dataset: nothing to delete (and no listing paid)
            plan.deletes.extend(t for t in sorted(present) if t not in plan.deletes)
            return
        deleted = set(plan.deletes)
        now = sorted((set(state.index_paths) | set(jsonl_added)) - deleted)
        rebuild = [p for p in now if p in jsonl_added or twin_path(p) not in present]
        wanted = {twin_path(p) for p in now}
        gone = sorted(t for t in present if t not in wanted)
        keep: set[Path] = set()
        known = self._known_previews(state, [twin_path(p) for p in rebuild] + gone, present)
        fetch = _Fetcher(plan, state.sha, known, self._download, self.fetch_cap)
        for p in rebuild:
            data = plan.adds[p] if p in plan.adds else self._download(p, state.sha)
            raw = data.read_bytes() if isinstance(data, Path) else data
            # Parsed already by the state read (a malformed index file stops it before any plan).
            entries = twin_entries(decode_rows(raw), fetch)
            twin = twin_path(p)
            if entries:
                plan.adds[twin] = self._write(entries, keep)
            elif twin in present and twin not in plan.deletes:
                plan.deletes.append(twin)
        plan.deletes.extend(t for t in gone if t not in plan.deletes)
        self._clear(keep)
        if fetch.skipped:
            log.info("files-layout index: %d previews left null this commit (fetched %d)", fetch.skipped,
                     fetch.fetched)

    def _known_previews(self, state: HubState, twins: list[str], present: set[str]) -> dict[str, bytes]:
        """Preview path → bytes, from the twins at ``state`` that this plan replaces or deletes."""
        out: dict[str, bytes] = {}
        for t in twins:
            if t not in present:
                continue
            try:
                entries = read_index(io.BytesIO(self._download(t, state.sha)))
            except StoreError as exc:  # an unreadable twin is made again; its previews are fetched
                log.warning("files-layout index %s unreadable (%s): made again", t, exc)
                continue
            for e in entries:
                ref = _preview_of(e.row)
                if ref is not None and e.preview:
                    out[ref] = e.preview
        return out

    def _write(self, entries: list[Any], keep: set[Path]) -> bytes | Path:
        """The twin's bytes: in memory when small (a publish step's, sent with the commit's other small
        files), else a file named by its content, so a plan built again after a 412 or an unknown outcome
        finds it unchanged and ``HubSync`` reuses its upload instead of sending it again."""
        buf = io.BytesIO()
        write_index(entries, buf)
        data = buf.getvalue()
        if len(data) <= INLINE_TWIN_BYTES:
            return data
        self.work_dir.mkdir(parents=True, exist_ok=True)
        out = self.work_dir / f"twin-{hashlib.sha256(data).hexdigest()[:32]}.parquet"
        if not out.is_file():
            atomic_write(out, data)
        keep.add(out)
        return out

    def _clear(self, keep: set[Path]) -> None:
        """The twins written for earlier plans and not used by this one (this client commits one plan at
        a time: those were sent or superseded)."""
        if self.work_dir.is_dir():
            for p in self.work_dir.iterdir():
                if p not in keep:
                    p.unlink(missing_ok=True)


def _preview_of(row: Any) -> str | None:
    ref = preview_ref(row)
    return None if ref is None else ref.path


class _Fetcher:
    """The preview reader of one plan: its own uploads, the replaced twins' previews, then downloads."""

    def __init__(self, plan: Plan, sha: str, known: dict[str, bytes], download: Download, cap: int) -> None:
        self._plan, self._sha, self._known, self._download, self._cap = plan, sha, known, download, cap
        self.fetched = self.skipped = 0

    def __call__(self, ref: FileRef) -> bytes | None:
        local = self._plan.adds.get(ref.path)
        if local is not None:
            return local.read_bytes() if isinstance(local, Path) else local
        if ref.path in self._known:
            return self._known[ref.path]
        if ref.path in self._plan.deletes:
            return None
        if self.fetched >= self._cap:
            self.skipped += 1
            return None
        self.fetched += 1
        try:
            data = self._download(ref.path, self._sha)
        except StoreError:
            return None  # not there: the row is kept, its preview null
        self._known[ref.path] = data
        return data


def list_twins(api: Any, repo_id: str, repo_type: str, sha: str) -> list[str]:
    """The twin paths at ``sha`` (one tree listing of ``FILES_INDEX_DIR``; none when it is not there)."""
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import RepoFile

    try:
        entries = list(api.list_repo_tree(repo_id, FILES_INDEX_DIR, revision=sha, repo_type=repo_type))
    except HfHubHTTPError as exc:
        if not folder_missing(exc):
            raise
        return []
    return sorted(e.path for e in entries if isinstance(e, RepoFile) and is_twin_path(e.path))
