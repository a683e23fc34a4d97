"""The typed Parquet index of the files layout: one Parquet file per JSONL index file. Pure.

In the files layout the JSONL index (``data/train.jsonl`` and its shards) stays the record that
every operation edits (publish, ``remove``, ``share``, compaction, ``migrate``). Each JSONL file that
holds files-layout rows has a *twin*, ``data/index/files/<stem>.parquet``, made from exactly those
rows by ``parquet_index.write_index`` (typed columns, the preview image embedded), so
``datasets.load_dataset`` reads typed rows with thumbnails in either layout. A twin is derived, never
edited: whatever changed its JSONL file, the twin is made again from the new lines (``plan_sync``
says which), so no operation needs its own Parquet edit and a twin cannot drift from its rows for
longer than until the next sync. Rows that sit in shards (a dataset being migrated) are left out:
the sharded layout's own Parquet index holds them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..records import IndexRow
from .index import FileRef, row_file_refs
from .parquet_index import IndexEntry, entry_of_row
from .shard_layout import INDEX_DIR

FILES_INDEX_DIR = f"{INDEX_DIR}/files"
PREVIEW_SUFFIXES = (".preview.webp", ".preview.png", ".preview.jpg")

# Reads the bytes of a file a row names (None when it is not there).
FileReader = Callable[[FileRef], bytes | None]


def twin_path(jsonl_path: str) -> str:
    """The twin of a JSONL index file: ``data/train-shard-….jsonl`` → ``data/index/files/train-shard-….parquet``."""
    stem = posixpath.basename(jsonl_path).removesuffix(".jsonl")
    return f"{FILES_INDEX_DIR}/{stem}.parquet"


def is_twin_path(path: str) -> bool:
    """Whether a repo path is a files-layout twin (the sharded layout's Parquet files are not)."""
    return path.startswith(FILES_INDEX_DIR + "/") and path.endswith(".parquet")


def preview_ref(row: IndexRow) -> FileRef | None:
    """The row's preview image among its extra files (``kind`` preview, or a ``.preview.*`` name)."""
    for ref in row_file_refs(row):
        if ref.path.endswith(PREVIEW_SUFFIXES):
            return ref
    return None


def twin_entries(rows: Iterable[IndexRow], read: FileReader) -> list[IndexEntry]:
    """The Parquet entries of a JSONL file's files-layout rows, each with its preview's bytes (null when
    the row names none or it cannot be read). A row that sits in shards is left out."""
    out = []
    for row in rows:
        if row.shard_path or row.ply_shard_path:
            continue
        ref = preview_ref(row)
        data = read(ref) if ref is not None else None
        out.append(entry_of_row(row, data, posixpath.basename(ref.path) if ref is not None and data else None))
    return out


@dataclass(frozen=True)
class SyncPlan:
    """What a sync does: the JSONL files whose twin is made again, the twins deleted (their JSONL file
    is gone)."""

    rebuild: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()


def plan_sync(jsonl: Mapping[str, str], recorded: Mapping[str, str], twins: Iterable[str]) -> SyncPlan:
    """Which twins to make again and which to delete.

    ``jsonl``: each JSONL index file present → a fingerprint of its content; ``recorded``: the JSONL file
    → the fingerprint its twin was made from (a twin made for no rows counts: it is the absence of a
    twin); ``twins``: the twin paths present. A JSONL file is rebuilt when its fingerprint differs from
    the recorded one; a twin whose JSONL file is gone is deleted."""
    rebuild = tuple(sorted(p for p, fp in jsonl.items() if recorded.get(p) != fp))
    wanted = {twin_path(p) for p in jsonl}
    delete = tuple(sorted(t for t in twins if t not in wanted))
    return SyncPlan(rebuild, delete)
