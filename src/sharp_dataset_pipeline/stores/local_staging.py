"""What one local publish step stages and records (see ``LocalStore.publish``)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..fsio import fsync_path
from ..records import Batch, Failure, ProcessedItem, PublishedFile
from .item_checks import file_problem
from .local_shard_remove import LocalTakedown


@dataclass(frozen=True)
class Staged:
    item_id: str
    file: PublishedFile
    tmp: Path
    final: Path


def stage_files(entries: list[Staged]) -> str:
    """Link (or copy) each file to its temp name, check it and fsync it: the slow part, outside any
    lock. Returns what is wrong with the item's files ("" when nothing is)."""
    for e in entries:
        try:
            os.link(e.file.local_path, e.tmp)
        except FileNotFoundError:
            return f"{e.file.local_path} is missing"
        except OSError:  # another filesystem, or links unsupported: copy instead
            try:
                shutil.copyfile(e.file.local_path, e.tmp)
            except FileNotFoundError:
                return f"{e.file.local_path} is missing"
        problem = file_problem(e.file, e.tmp)
        if problem:
            return problem
        fsync_path(e.tmp)
    return ""


@dataclass
class Recorded:
    """What one publish step recorded (filled in inside its write transaction)."""

    batch: Batch
    items: list[ProcessedItem]
    failures: list[Failure]
    shard: str = ""
    rows: list[tuple] = field(default_factory=list)
    replaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (old shard, old row)
    retired: list[str] = field(default_factory=list)  # RETIRE journal entries of the old rows' files
    units_held: list[str] = field(default_factory=list)
    shard_written: bool = False
    committed: bool = False
    takedown: LocalTakedown | None = None  # ``--redo`` inside shards: the old samples' rewrite


def replaces(redo: str, old: tuple[str, str], new: tuple[str, str]) -> bool:
    """Whether a publish with ``redo`` replaces a published item made by ``old`` (predictor, model)."""
    return redo == "all" or (redo == "model-changed" and old != new)
