"""The local store's sharded layout (issue #14): its layout marker, the packed publish step's files,
and the Parquet index compaction. The layout on disk is the Hub repo's (``publish/shard_layout.py``).

- **Layout.** ``.coord/layout.json`` is written when a dataset is new (``layout_choice``); a folder
  without it that holds published rows, index files or the predecessor's ``unsplash/`` folders is
  ``files``.
- **Publish.** ``pack_step`` packs the step's new items (``shard_pack.pack_batch``) in the staging
  folder; the first packed item carries the step's files (tars and the pending Parquet index shard),
  so the store's one staging path (intent journal, rename before the ledger transaction, crash
  repair) places them: invariant 1 holds as for per-item files.
- **Compaction.** Pending Parquet index shards merge into ``data/index/parts`` (``parquet_index``):
  the merged file is in place before its inputs go, so a reader may see a row twice for a moment
  (``merge_index`` keeps one when it next runs), never miss one.
- **Late fields.** ``sync_index_fields`` carries fields recorded on published rows after publish (share
  results) from the ledger into the Parquet files that hold those rows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from ..fsio import atomic_file, atomic_write, fsync_dir, pid_alive
from ..publish.files_index import is_twin_path
from ..publish.index import row_files, row_from_json
from ..publish.index_fields import read_fields, rewrite_fields, stale_fields
from ..publish.layout_choice import MARKER_PATH, PREDECESSOR_DIR, decide_layout, marker_bytes, read_marker
from ..publish.parquet_index import IndexShardInfo, merge_index, plan_compaction
from ..publish.shard_layout import DEFAULT_MAX_SHARD_BYTES, INDEX_DIR, index_shard_path, parse_shard_path
from ..records import Failure, IndexRow, ProcessedItem
from .shard_packer import ShardPacker

log = logging.getLogger(__name__)



def local_layout(root: Path, requested: str, has_rows: bool, new_default: str) -> str:
    """The layout of the dataset at ``root``, writing its marker when the dataset is new."""
    marker = root / MARKER_PATH
    recorded = read_marker(marker.read_bytes()) if marker.is_file() else None
    predecessor = (root / PREDECESSOR_DIR).is_dir()
    chosen, write = decide_layout(requested, recorded, has_rows or predecessor, new_default)
    if write:
        atomic_write(marker, marker_bytes(chosen))
    return chosen


def step_files(row: IndexRow) -> list[str]:
    """Repo paths a row's publish step placed: its own files, or its shards and the step's index shard."""
    paths = row_files(row)
    for shard in (row.shard_path, row.ply_shard_path):
        if shard:
            paths.append(shard)
            parsed = parse_shard_path(shard)
            if parsed is not None:
                paths.append(index_shard_path(parsed[1]))
    return paths


_PACK_PREFIX = "pack-"


def remove_dead_packs(staging: Path) -> int:
    """Drop the packing folders (``pack_step``) of processes that died mid-step: their tars were never
    placed, or were placed as journaled staged files that crash repair already settled."""
    removed = 0
    for folder in staging.iterdir() if staging.is_dir() else []:
        pid = folder.name[len(_PACK_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and folder.name.startswith(_PACK_PREFIX) and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def pack_step(items: list[ProcessedItem], client_id: str,
              staging: Path) -> tuple[list[ProcessedItem], list[Failure], ShardPacker]:
    """The step's new items packed: their rows point into the shards, and the first item carries
    every file of the step. An item the packer refuses fails alone (invariant 8). Returns the packed
    items, the refused items' failures and the packer (``clear`` it once the step is over)."""
    work = staging / f"{_PACK_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    packer = ShardPacker(work, client_id, DEFAULT_MAX_SHARD_BYTES)
    packed, failed = packer.pack(items)
    if packed is None:
        return [], failed, packer
    out = list(packed.items)
    out[0] = dataclasses.replace(out[0], files=list(packed.files))
    return out, failed, packer


def in_shards(old_rows: dict[str, tuple[str, str]], ids: list[str]) -> dict[str, IndexRow]:
    """The published rows (``old_rows``: id -> (index shard, row JSON)) of ``ids`` that sit in shards."""
    rows = {i: row_from_json(old_rows[i][1]) for i in ids if i in old_rows}
    return {i: r for i, r in rows.items() if r.shard_path or r.ply_shard_path}


def index_files(root: Path) -> list[IndexShardInfo]:
    """Every Parquet index file of the sharded layout under ``data/index`` with its size (rows unknown
    without reading); the files layout's twins (``publish.files_index``) are not among them."""
    base = root / INDEX_DIR
    if not base.is_dir():
        return []
    return [IndexShardInfo(p.relative_to(root).as_posix(), 0, p.stat().st_size)
            for p in sorted(base.rglob("*.parquet"))
            if not p.name.startswith(".") and not is_twin_path(p.relative_to(root).as_posix())]


def compact_parquet(root: Path) -> int:
    """Merge the pending Parquet index shards (and small parts) into parts; returns files merged."""
    merged = 0
    for step in plan_compaction(index_files(root)):
        out = root / step.output
        out.parent.mkdir(parents=True, exist_ok=True)
        inputs = [root / p for p in step.inputs]
        handles = [p.open("rb") for p in inputs]
        try:
            with atomic_file(out, fsync=True) as fh:
                merge_index(handles, fh)
        finally:
            for h in handles:
                h.close()
        fsync_dir(out.parent)
        for p in inputs:
            if p != out:
                p.unlink(missing_ok=True)
        merged += len(inputs)
    if merged:
        log.debug("compacted %d Parquet index files", merged)
    return merged


def sync_index_fields(root: Path, rows_of: Callable[[Iterable[str]], dict[str, IndexRow]]) -> list[str]:
    """Rewrite each Parquet index file whose rows' late fields (share results) differ from the ledger's
    (``rows_of(ids)``: the published rows of those ids); returns the files rewritten. Each file is
    replaced atomically, so a crash leaves it old or new, and a rerun finds what is still stale."""
    rewritten = []
    for info in index_files(root):
        path = root / info.path
        with path.open("rb") as fh:
            have = read_fields(fh)
        updates = stale_fields(have, rows_of(have))
        if not updates:
            continue
        with path.open("rb") as src, atomic_file(path, fsync=True) as out:
            rewrite_fields(src, updates, out)
        fsync_dir(path.parent)
        rewritten.append(info.path)
    if rewritten:
        log.debug("late row fields carried into %d Parquet index files", len(rewritten))
    return rewritten
