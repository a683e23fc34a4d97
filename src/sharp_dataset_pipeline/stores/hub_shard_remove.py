"""A takedown inside shards on the Hub store (``remove`` in the sharded layout, issue #14).

Decided at the state the remove commit names as its parent (``HubAdmin._plan_remove``): every tar
holding a sample of a removed item is downloaded at that sha and rewritten without it
(``shard_rewrite.plan_takedown``), or deleted when nothing is left; the Parquet index files that hold
an affected row (the step's pending index shard, or the compacted parts once it was merged) are
rewritten or deleted; the kept rows' new ``members`` go to the JSONL edits. All of it rides on the
remove's ONE commit: the rewritten tars are files on disk, so ``HubSync`` uploads them (LFS) before
the compare-and-swap, and a 412 re-plans the whole takedown at the new head.

``run --redo`` of items in shards reuses it (``add_replacement``): the publish commit carries the new
samples in its new tars and takes the old ones out of theirs, without excluding the ids.

Cost beyond a files-layout remove: every index file is parsed (to find the rows of the affected
shards), one paged listing of ``data/index``, and a download of each affected tar and Parquet file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..publish.index import decode_rows
from ..publish.index_edit import drop_lines, update_lines
from ..publish.shard_layout import INDEX_PARTS_DIR, index_shard_path, parse_shard_path
from ..publish.shard_rewrite import Takedown, plan_takedown, rewrite_index, takedown_drops
from ..records import IndexRow
from .hub_ops import Plan
from .hub_state import HubState, git_blob_oid, summarize_rows


@dataclass
class HubTakedown:
    """A planned takedown: the new shards (``takedown``) and the Parquet files' fates (path → the new
    file, or None to delete it)."""

    takedown: Takedown
    index: dict[str, Path | None] = field(default_factory=dict)

    @property
    def updates(self) -> dict[str, dict[str, str]]:
        return self.takedown.updates

    @property
    def rewritten_shards(self) -> list[str]:
        return sorted(self.takedown.files)

    def add_to(self, plan: Plan) -> None:
        """The rewritten tars and Parquet files ride on ``plan``, the emptied ones are deleted."""
        for path, local in sorted(self.takedown.files.items()):
            plan.adds[path] = local
        plan.deletes.extend(p for p in self.takedown.deleted if p not in plan.deletes)
        for path, new in sorted(self.index.items()):
            if new is None:
                plan.deletes.append(path)
            else:
                plan.adds[path] = new


def index_candidates(shard_rows: Iterable[IndexRow], present: list[str]) -> list[str]:
    """The Parquet files that may hold the affected rows: each step's pending index shard while it
    exists, and the compacted parts once any step's was merged into them."""
    steps: set[str] = set()
    for row in shard_rows:
        for shard in (row.shard_path, row.ply_shard_path):
            parsed = parse_shard_path(shard) if shard else None
            if parsed is not None:
                steps.add(index_shard_path(parsed[1]))
    have = set(present)
    out = sorted(steps & have)
    if steps - have:  # merged already: the rows are somewhere in the parts
        out += sorted(p for p in present if p.startswith(INDEX_PARTS_DIR + "/"))
    return out


def plan_hub_takedown(removed: dict[str, IndexRow], rows: Iterable[IndexRow], download: Callable[[str], Path],
                      parquet_files: Callable[[], list[str]], work_dir: Path) -> HubTakedown | None:
    """The takedown of the ``removed`` rows that sit in shards (None when none does). ``rows`` are every
    visible row at the state; ``download(path)`` a local copy of a repo file at that state."""
    inside = [r for r in removed.values() if r.shard_path or r.ply_shard_path]
    if not inside:
        return None
    drops = takedown_drops(inside)
    shard_rows = [r for r in rows if r.shard_path in drops or r.ply_shard_path in drops]
    takedown = plan_takedown(inside, shard_rows, download, work_dir)
    out = HubTakedown(takedown)
    drop_ids = {r.id for r in inside}
    for n, path in enumerate(index_candidates(shard_rows, parquet_files())):
        new = work_dir / f"index-{n:04d}.parquet"
        with download(path).open("rb") as src:
            left = rewrite_index(src, drop_ids, takedown, lambda n=new: n.open("wb"))
        if left is not None:
            out.index[path] = new if left else None
    return out


def takedown_dir(cache_dir: Path | None) -> tempfile.TemporaryDirectory[str]:
    """A scratch folder for one remove's rewritten files (kept until its commit is over)."""
    base = Path(cache_dir or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".takedown-", dir=base)


def edit_index_files(state: HubState, plan: Plan, ids: set[str], updates: dict[str, dict[str, str]],
                     blob: Callable[[str], bytes], paths: list[str], blobs: dict[str, bytes]) -> list[str]:
    """The JSONL index files (``paths``) without the rows of ``ids`` and with ``updates`` merged into the
    kept rows (their new shard members), riding on ``plan`` (new contents also kept in ``blobs`` by oid);
    returns the paths rewritten or deleted."""
    rewritten = []
    for path in paths:
        held = state.parsed[path].ids
        hit, moved = ids & held, {i: updates[i] for i in held if i in updates and i not in ids}
        if not (hit or moved):
            continue
        kept = drop_lines(blob(path), hit)
        if moved:
            kept = update_lines(kept, moved)
        rewritten.append(path)
        if kept.strip():
            plan.adds[path] = kept
            plan.known[path] = (git_blob_oid(kept), summarize_rows(decode_rows(kept)))
            blobs[git_blob_oid(kept)] = kept
        else:
            plan.deletes.append(path)
    return rewritten


def add_replacement(plan: Plan, state: HubState, takedown: HubTakedown | None, blob: Callable[[str], bytes],
                    paths: list[str], blobs: dict[str, bytes]) -> None:
    """``run --redo`` in shards: the replaced rows' old samples leave their tars in the publish commit
    (``takedown``, planned for the old rows), exactly as a takedown's, but their ids are not excluded.
    ``plan_publish`` already dropped the old rows from the JSONL index files (those edits ride on
    ``plan`` as bytes); the rows kept in the rewritten tars get their new ``members`` on top of them."""
    if takedown is None:
        return

    def current(path: str) -> bytes:
        staged = plan.adds.get(path)
        return staged if isinstance(staged, bytes) else blob(path)

    edit_index_files(state, plan, set(), takedown.updates, current, paths, blobs)
    takedown.add_to(plan)
