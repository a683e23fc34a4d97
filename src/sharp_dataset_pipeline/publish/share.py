"""``share --missing`` and recording late shares: which published rows still lack a gsplat.org share,
which file of each to upload, and the share fields written back onto the store's rows.

The client itself (options, the base URL's safety rules, the tRPC calls and their retries) is in
``gsplat_client``; its names are importable from here too, so this module stays the one to import
for sharing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import PermanentError, SharpDatasetError
from ..net import error_reason
from ..records import IndexRow
from ..splat.filter import top_visible
from ..splat.ply import read_ply, write_ply
from .gsplat_client import (
    SHARE_FIELDS,
    GsplatClient,
    ShareOptions,
    ShareResult,
    check_base,
    share_fields,
    try_share,
)
from .shard_read import member_file

__all__ = [
    "SHARE_FIELDS", "FileAccess", "GsplatClient", "RowSource", "ShareFieldSink", "ShareOptions", "ShareResult",
    "ShareSummary", "StoreShareRecorder", "check_base", "local_share_file", "share_fields", "share_file_picker",
    "share_missing", "try_share",
]

logger = logging.getLogger(__name__)


class RowSource(Protocol):
    def rows(self) -> Iterable[IndexRow]: ...


@dataclass
class ShareSummary:
    """What one ``share --missing`` pass did."""

    shared: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # item id → reason
    already: int = 0


def share_missing(
    store: RowSource,
    client: GsplatClient,
    *,
    file_for: Callable[[IndexRow], Path],
    record: Callable[[str, dict[str, str]], None],
    limit: int | None = None,
) -> ShareSummary:
    """Share every published row without share fields and record the fields as each share succeeds.

    ``file_for(row)`` gives the file to upload (e.g. :func:`share_file_picker`); ``record(item_id,
    fields)`` writes the fields into the store (``StoreAdmin.update_share_fields``).
    A failure is logged, counted with its reason and left for the next pass; it never stops the pass.
    """
    summary = ShareSummary()
    todo: list[IndexRow] = []
    for row in store.rows():
        if row.gsplat_share_id:
            summary.already += 1
        else:
            todo.append(row)
    for row in todo[:limit] if limit is not None else todo:
        try:
            path = file_for(row)
            result = client.share_file(path, title=row.id)
        except (SharpDatasetError, OSError) as exc:
            summary.failed[row.id] = error_reason(exc) if isinstance(exc, SharpDatasetError) else "file_missing"
            logger.warning("share of %s failed (%s): %s", row.id, summary.failed[row.id], exc)
            continue
        record(row.id, share_fields(result))
        summary.shared.append(row.id)
    return summary


def _extra_paths(row: IndexRow) -> dict[str, str]:
    try:
        entries = json.loads(row.extra_files or "[]")
    except ValueError:
        return {}
    return {e["kind"]: e["path"] for e in entries if isinstance(e, dict)
            and isinstance(e.get("kind"), str) and isinstance(e.get("path"), str)} if isinstance(entries, list) else {}


class FileAccess(Protocol):
    """A local path with the bytes of a store file (the file itself, or a downloaded copy)."""

    def local_path(self, repo_path: str) -> Path: ...


@dataclass(frozen=True)
class _FolderFiles:
    root: Path

    def local_path(self, repo_path: str) -> Path:
        return Path(self.root) / repo_path


def share_file_picker(
    files: FileAccess, *, use_small_ply: bool, keep: int, work_dir: Path
) -> Callable[[IndexRow], Path]:
    """``file_for`` for ``share_missing``: what the pipeline would have shared.

    With ``use_small_ply`` (``GSPLAT_USE_SMALL_PLY``): the item's published small PLY, else one made
    now from its SHARP PLY with the ``keep`` most visible Gaussians (in ``work_dir``). Otherwise, or
    when no PLY exists, the SHARP PLY, then the ``.spz``.
    """
    def pick(row: IndexRow) -> Path:
        if row.shard_path:  # sharded layout: the splat member, checked, out of its tar
            wanted = ("small.ply", "spz", "ply") if use_small_ply else ("ply", "spz")
            if (member := member_file(files.local_path, row, wanted, work_dir)) is not None:
                return member
        extra = _extra_paths(row)
        ply = files.local_path(row.ply_path) if row.ply_path else None
        if use_small_ply:
            if "small_ply" in extra and (small := files.local_path(extra["small_ply"])).is_file():
                return small
            if ply is not None and ply.is_file():
                work_dir.mkdir(parents=True, exist_ok=True)
                out = work_dir / f"{row.id}.small.ply"
                write_ply(top_visible(read_ply(ply), keep), out)
                return out
        for candidate in (ply, files.local_path(extra["spz"]) if "spz" in extra else None):
            if candidate is not None and candidate.is_file():
                return candidate
        raise PermanentError(f"item {row.id}: no .ply or .spz file to share", reason="gsplat_no_file")

    return pick


def local_share_file(
    root: Path, *, use_small_ply: bool, keep: int, work_dir: Path
) -> Callable[[IndexRow], Path]:
    """``share_file_picker`` for the files of a local store folder at ``root``."""
    return share_file_picker(_FolderFiles(Path(root)), use_small_ply=use_small_ply, keep=keep, work_dir=work_dir)


class ShareFieldSink(Protocol):
    """Where a store records late share fields (every ``StoreAdmin`` is one)."""

    share_record_every: int

    def update_share_fields(self, updates: dict[str, dict[str, str]], now: float) -> list[str]: ...

    def sync_index(self) -> None: ...


class StoreShareRecorder:
    """``record`` / ``flush`` for the share stage and ``share --missing``, onto a store's admin.

    Fields are written ``sink.share_record_every`` items at a time (the local store: each at once, in
    its own small ledger transaction, so a crash loses no share already made; the hub: one commit per
    batch), and the index files are brought in line once per ``sync_every`` recorded items and at
    ``flush``: one index rewrite per batch, never a full compaction per item.
    """

    def __init__(self, sink: ShareFieldSink, sync_every: int = 50, clock: Callable[[], float] = time.time) -> None:
        self.sink, self.sync_every, self.clock = sink, max(1, sync_every), clock
        self._pending: dict[str, dict[str, str]] = {}
        self._unsynced = 0

    def record(self, item_id: str, fields: dict[str, str]) -> None:
        self._pending[item_id] = fields
        if len(self._pending) >= max(1, self.sink.share_record_every):
            self._write()
        if self._unsynced >= self.sync_every:
            self._sync()

    def flush(self) -> None:
        """Write what is pending and bring the index files in line (a no-op when nothing changed)."""
        self._write()
        self._sync()

    def _write(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, {}
            self._unsynced += len(self.sink.update_share_fields(pending, self.clock()))

    def _sync(self) -> None:
        if self._unsynced:
            self.sink.sync_index()
            self._unsynced = 0
