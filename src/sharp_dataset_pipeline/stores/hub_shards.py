"""The Hub store's sharded layout (issue #14): which layout a repo has, and what a sharded publish
or compaction adds to its one commit.

- **Layout.** Per dataset, recorded in ``.coord/layout.json`` (``hub_state.LAYOUT``) in the first
  commit a client makes on a new dataset (with the card). A repo without the marker that already
  holds index rows (or the predecessor's ``unsplash/<id>/…`` folders) is ``files`` (and left without
  one); an empty one gets ``shards`` unless the store was asked for ``files``; an explicit layout
  that disagrees with the repo's is a ``ConfigError``.
- **Publish.** Inside the publish step's ``build(state)``, once the state says which items are
  really new (or replaced by ``run --redo``), those items are packed (``publish.shard_pack.pack_batch``)
  into WebDataset tars and the step's Parquet index shard; the same item set is packed once
  (``ShardPacker`` caches by the batch digest), so a 412 that leaves the set unchanged reuses the tars and the uploads
  ``HubSync`` made of them. The packed rows go into the JSONL index shard as in the files layout.
- **Compaction.** Pending Parquet index shards are merged into ``data/index/parts`` (``parquet_index``)
  in the same commit as the JSONL compaction, the merged ones deleted.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..publish.files_index import is_twin_path
from ..publish.layout_choice import decide_layout, marker_bytes
from ..publish.parquet_index import IndexShardInfo, merge_index, plan_compaction
from ..publish.shard_layout import INDEX_DIR, PENDING_INDEX_DIR
from ..publish.shard_pack import PLY_SHARD_KIND, PackedBatch
from ..records import Batch, Failure
from .hub_errors import folder_missing
from .hub_ops import Plan, to_replace
from .hub_state import LAYOUT, LAYOUT_PATH, HubState
from .item_checks import units_held_back
from .shard_packer import ShardPacker

log = logging.getLogger(__name__)



def repo_layout(state: HubState, requested: str, predecessor: Callable[[], bool],
                new_default: str = "shards") -> tuple[str, bool]:
    """``(layout, marker to write)`` for the repo at ``state`` (``layout_choice.decide_layout``);
    ``predecessor()`` tells (one call, asked only for a repo without marker or rows) whether the
    predecessor's item folders exist. A repo detected as ``files`` is detected again at each open:
    opening never costs it a commit."""
    marked = state.parsed.get(LAYOUT_PATH) if LAYOUT_PATH in state.entries else None
    recorded = None if marked is None else str(marked)
    has_rows = recorded is None and bool(state.index_paths or predecessor())
    return decide_layout(requested, recorded, has_rows, new_default)


def add_marker(plan: Plan, layout_name: str) -> None:
    """The layout marker rides on ``plan`` (parsed into the state the commit leaves)."""
    plan.add_known(LAYOUT_PATH, marker_bytes(layout_name), LAYOUT)


def shard_batch(state: HubState, todo: Batch, packer: ShardPacker) -> tuple[Batch, PackedBatch | None, list[Failure]]:
    """``todo`` with its new items (not published at ``state``, or published and replaced by its
    ``redo``) packed: their rows now point into the step's new shards and they carry no files of their
    own. Other published items stay as they are, for ``plan_publish`` to count as skipped; the old
    samples of the replaced ones leave their tars in the same commit (``HubAdmin.replace_in_shards``).
    Items the packer refuses leave the batch as failures recorded in its ledger delta (their units
    renewed, not marked done)."""
    replacing = set(to_replace(state, todo))
    new = [pi for pi in todo.items if pi.row.id not in state.published or pi.row.id in replacing]
    if not new:
        return todo, None, []
    new_ids = {pi.row.id for pi in new}
    old = [pi for pi in todo.items if pi.row.id not in new_ids]
    packed, failed = packer.pack(new)
    todo = dataclasses.replace(todo, items=[*(packed.items if packed else []), *old])
    if failed:
        done, held = units_held_back(todo.units_done, failed)
        todo = dataclasses.replace(todo, failures=[*todo.failures, *failed], units_done=done,
                                   renew_units=[*todo.renew_units, *held])
    return todo, packed, failed


def add_packed(plan: Plan, packed: PackedBatch) -> bool:
    """The step's tars and Parquet index shard ride on ``plan``; True when it holds PLY shards."""
    for f in packed.files:
        plan.adds[f.repo_path] = f.local_path
    return any(f.kind == PLY_SHARD_KIND for f in packed.files)


@dataclass(frozen=True)
class IndexFiles:
    """The Parquet index files at one sha (path -> size), for compaction."""

    sizes: dict[str, int]

    @property
    def pending(self) -> list[str]:
        return sorted(p for p in self.sizes if p.startswith(PENDING_INDEX_DIR + "/"))


def list_index_files(api: Any, repo_id: str, repo_type: str, sha: str) -> IndexFiles:
    """Every ``*.parquet`` under ``data/index`` at ``sha`` (one paged tree listing)."""
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import RepoFile

    sizes: dict[str, int] = {}
    try:
        for entry in api.list_repo_tree(repo_id, INDEX_DIR, recursive=True, revision=sha, repo_type=repo_type):
            # The files layout's twins (``hub_files_index``) are not the sharded layout's index.
            if isinstance(entry, RepoFile) and entry.path.endswith(".parquet") and not is_twin_path(entry.path):
                sizes[entry.path] = int(entry.size)
    except HfHubHTTPError as exc:
        if not folder_missing(exc):
            raise
        # nothing published in this layout yet
    return IndexFiles(sizes)


def add_index_compaction(plan: Plan, files: IndexFiles, download: Callable[[str], bytes], work_dir: Path) -> int:
    """Pending index shards (and small parts) merged into parts, riding on ``plan``; returns how many
    files were merged. The merged inputs are deleted in the same commit."""
    steps = plan_compaction([IndexShardInfo(p, 0, s) for p, s in sorted(files.sizes.items())])
    merged = 0
    work_dir.mkdir(parents=True, exist_ok=True)
    for step in steps:
        inputs = []
        for path in step.inputs:
            local = work_dir / f"in-{merged}-{Path(path).name}"
            local.write_bytes(download(path))
            inputs.append(local)
            merged += 1
        out = work_dir / Path(step.output).name
        handles = [p.open("rb") for p in inputs]
        try:
            with out.open("wb") as fh:
                merge_index(handles, fh)
        except StoreError as exc:
            raise StoreError(f"index compaction of {len(inputs)} Parquet files failed: {exc}") from exc
        finally:
            for h in handles:
                h.close()
        plan.adds[step.output] = out
        plan.deletes.extend(p for p in step.inputs if p not in plan.deletes)
    return merged
