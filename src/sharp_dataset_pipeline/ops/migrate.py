"""``migrate --to shards`` on any store: a files-layout dataset (ours, or the predecessor's
``unsplash/<id>/<id>.*`` + ``data/train.jsonl``) moved into the sharded layout in bounded steps.

The rows still in the files layout are cut into steps (``publish.transfer_plan.migration_steps``,
id order); each item is staged (``ops.migrate_items.stage_item``: photo as is, SPZ and camera from
the PLY), the step's items are packed once (``stores.shard_packer``) and landed by the store in ONE
atomic step (``ShardMigration.land_step``) that replaces their rows. The store deletes the old
files only after the shards holding them have landed, and ``finish`` records the ``shards``
layout once no row is left in files. Killed at any point, a rerun plans again from the rows: the
ones already in shards are done. An item that cannot be migrated stays as it is, with its reason,
and the layout stays ``files`` until it is dealt with (removed, or fixed and migrated again).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PermanentError, StoreError
from ..publish.layout_choice import SHARDS
from ..publish.shard_layout import DEFAULT_MAX_SHARD_BYTES
from ..publish.transfer_plan import DEFAULT_STEP_BYTES, in_files_layout, migration_steps
from ..records import IndexRow, ProcessedItem
from ..stores.base import MigrationStep, ShardMigration
from ..stores.shard_packer import ShardPacker
from .migrate_items import MigrateOptions, stage_item

log = logging.getLogger(__name__)

MIGRATE_CLIENT = "migrate"  # the packer's client id: a rerun from any machine names the same shards


@dataclass(frozen=True)
class MigrateRun:
    """How a migration is cut and what it keeps (``step_items`` 0: the store's own bound)."""

    step_items: int = 0
    step_bytes: int = DEFAULT_STEP_BYTES
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    items: MigrateOptions = MigrateOptions()


@dataclass(frozen=True)
class MigrateProgress:
    """One landed step, for the progress display."""

    step: int
    steps: int
    done: int  # items in shards so far (this run)
    total: int  # items this run set out to migrate
    landed: MigrationStep


@dataclass
class MigrateResult:
    store: str
    to_migrate: int = 0  # rows in the files layout when the run started
    already: int = 0  # rows in shards when it started (an earlier, interrupted run's)
    migrated: int = 0
    steps: int = 0
    deleted: int = 0  # old per-item files deleted
    failed: dict[str, str] = field(default_factory=dict)  # id -> why it stays in the files layout
    finished: bool = False  # the layout is ``shards`` now
    nothing_to_do: str = ""  # why there was nothing to do ("" when there was)


def _stage(rows: list[IndexRow], target: ShardMigration, work: Path, opts: MigrateOptions,
           failed: dict[str, str]) -> list[ProcessedItem]:
    """The step's items staged; one that cannot be (a bad or unreadable file) fails alone. When every
    item fails to be read from the store, the store is the problem: the migration stops there."""
    staged: list[ProcessedItem] = []
    unread: list[StoreError] = []
    for row in rows:
        try:
            staged.append(stage_item(row, target.local_path, work, opts))
        except (PermanentError, OSError, StoreError) as exc:
            if isinstance(exc, StoreError):
                unread.append(exc)
            log.warning("item %s stays in the files layout: %s", row.id, exc)
            failed[row.id] = str(exc)
    if rows and len(unread) == len(rows):
        raise StoreError(f"{target.description}: no file of a step's {len(rows)} items could be read "
                         f"({unread[-1]}); nothing of it changed, run migrate again") from unread[-1]
    return staged


def _land(step_rows: list[IndexRow], target: ShardMigration, work: Path, run: MigrateRun,
          failed: dict[str, str]) -> MigrationStep | None:
    """Stage, pack and land one step; None when none of its items could be packed."""
    packer = ShardPacker(work / "packs", MIGRATE_CLIENT, run.max_shard_bytes)
    try:
        staged = _stage(step_rows, target, work / "stage", run.items, failed)
        packed, refused = packer.pack(staged) if staged else (None, [])
        for f in refused:
            log.warning("item %s stays in the files layout: %s", f.item_id, f.detail)
            failed[f.item_id] = f.detail
        if packed is None:
            return None
        ids = {pi.row.id for pi in packed.items}
        return target.land_step(packed, [r for r in step_rows if r.id in ids])
    finally:
        packer.clear()
        shutil.rmtree(work / "stage", ignore_errors=True)


def migrate_to_shards(target: ShardMigration, work_dir: Path, run: MigrateRun = MigrateRun(),
                      progress: Callable[[MigrateProgress], None] | None = None) -> MigrateResult:
    """Migrate every files-layout row of ``target`` (see the module docstring)."""
    result = MigrateResult(store=target.description)
    rows = target.rows()
    todo = [r for r in rows if in_files_layout(r)]
    result.to_migrate, result.already = len(todo), len(rows) - len(todo)
    if not todo and target.layout == SHARDS:
        result.nothing_to_do = "the dataset is in the shards layout already"
        return result
    if not rows:
        result.nothing_to_do = "the dataset has no published items"
        return result
    steps = migration_steps(todo, max_items=run.step_items or target.step_items, max_bytes=run.step_bytes)
    work_dir.mkdir(parents=True, exist_ok=True)
    for number, step_rows in enumerate(steps, start=1):
        landed = _land(step_rows, target, work_dir, run, result.failed)
        if landed is None:
            continue
        result.steps += 1
        result.migrated += len(landed.migrated_ids)
        result.deleted += landed.deleted
        if progress is not None:
            progress(MigrateProgress(number, len(steps), result.migrated, len(todo), landed))
    if result.failed:
        log.warning("%d items could not be migrated: the layout stays files", len(result.failed))
        return result
    left = [r.id for r in target.rows() if in_files_layout(r)]
    if left:  # published in the files layout meanwhile (a run still going): not finished
        raise StoreError(f"{target.description}: {len(left)} rows are still in the files layout "
                         f"(e.g. {left[0]}): is a run publishing to it? Stop it and migrate again")
    final = target.finish()
    result.deleted += final.deleted
    result.finished = True
    return result
