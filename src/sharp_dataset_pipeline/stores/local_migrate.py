"""``migrate --to shards`` on the local store (``ShardMigration``): its steps are publish steps.

A step is one ``LocalStore.publish`` of the packed items with ``redo="all"`` while the dataset is
still ``files``: the first item carries the step's tars and Parquet index shard, and the store's
one publish path (intent journal, files renamed into place before the ledger transaction that
replaces the rows, crash repair in ``open()``) makes it atomic. The old rows' files are journaled
in that transaction and deleted right after it (after a kill -9: by the next ``open()``), once no
index file shows the old rows: the shards that hold them have landed by then. ``finish`` deletes
what is left in migrated items' folders, writes the ``shards`` marker and drops the files
layout's Parquet twins (``local_files_index``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from ..errors import StoreError
from ..fsio import atomic_write
from ..publish import layout
from ..publish.card import CardYamlError, card_facts, retarget_card
from ..publish.index import row_files
from ..publish.layout_choice import MARKER_PATH, SHARDS, marker_bytes
from ..publish.predecessor_index import holds_predecessor_rows
from ..publish.shard_layout import PLY_DIR
from ..publish.shard_pack import PackedBatch
from ..records import Batch, IndexRow
from .base import MigrationStep
from .local import LocalStore
from .local_adopt import adopt_predecessor_index
from .local_files_index import keep_files_index

log = logging.getLogger(__name__)

DEFAULT_STEP_ITEMS = 256  # no commit limits here: a step is bounded by what one tar set holds well
_OWN_TOPS = frozenset({layout.COORD_DIR, "data"})


class LocalMigration:
    """``ShardMigration`` of an opened ``LocalStore`` (see the module docstring)."""

    step_items = DEFAULT_STEP_ITEMS

    def __init__(self, store: LocalStore, client_id: str) -> None:
        if not store.is_open:
            raise StoreError(f"{store.description}: open the store before migrating it")
        self._store, self._client = store, client_id or "migrate"
        self.description = store.description
        self.root = store.root

    @property
    def layout(self) -> str:
        return self._store.layout

    def rows(self) -> list[IndexRow]:
        """Every row of the ledger; a predecessor index at the index path is taken into it first
        (``local_adopt``: its bytes kept, its rows recorded, never clobbered)."""
        index = self.root / self._store.index_path
        if index.is_file() and holds_predecessor_rows(index.read_bytes()):
            adopt_predecessor_index(self.root, self._store.index_path, time.time())
        return list(self._store.rows())

    def local_path(self, repo_path: str) -> Path:
        return self.root / layout.check_repo_path(repo_path)

    def land_step(self, packed: PackedBatch, old_rows: list[IndexRow]) -> MigrationStep:
        """One publish step replacing ``old_rows`` by the packed rows (the first item carries the files)."""
        if self._store.layout == SHARDS:
            raise StoreError(f"{self.description}: already in the shards layout")
        # Ids taken down since the rows were read are left out (their samples stay unreferenced in
        # the tar): the first item kept carries the step's files, which the publish places with it.
        states = self._store.item_states([pi.row.id for pi in packed.items])
        items = [pi for pi in packed.items if not (pi.row.id in states and states[pi.row.id].excluded)]
        if not items:
            return MigrationStep()
        items[0] = dataclasses.replace(items[0], files=list(packed.files))
        receipt = self._store.publish(Batch(client_id=self._client, items=items, redo="all"))
        if receipt.failed:
            raise StoreError(f"{self.description}: migration step refused: {receipt.failed[0].detail}")
        gone = self._old_files_left(old_rows)
        return MigrationStep(migrated_ids=sorted(receipt.replaced_ids), shard_files=packed.paths(),
                             deleted=sum(len(row_files(r)) for r in old_rows) - len(gone), commit=receipt.commit)

    def _old_files_left(self, rows: list[IndexRow]) -> list[str]:
        return [p for r in rows for p in row_files(r) if (self.root / p).exists()]

    def finish(self) -> MigrationStep:
        """Files left in migrated items' folders deleted, empty item folders removed, then the marker."""
        migrated = {r.id for r in self._store.rows() if r.shard_path}
        deleted = 0
        for top in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name not in _OWN_TOPS):
            for path in sorted(top.rglob("*"), reverse=True):  # children before their folders
                rel, item_id = path.relative_to(self.root).as_posix(), path.parent.name
                if path.is_file() and item_id in migrated and layout.holder_of(rel, item_id) is not None:
                    path.unlink()
                    deleted += 1
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
            if top.is_dir() and not any(top.iterdir()):
                top.rmdir()
        atomic_write(self.root / MARKER_PATH, marker_bytes(SHARDS))
        self._store.layout = SHARDS
        keep_files_index(self.root, self._store.index_path)  # every row is in shards: the twins go
        card = self.root / layout.README_PATH
        try:
            generated = card_facts(card.read_text(encoding="utf-8")) is not None
        except (OSError, UnicodeDecodeError):
            generated = not card.exists()
        if generated:
            self._store.write_card()  # the card of the shards layout (configs index, splats, ply)
        else:
            self._retarget_card(card)
        log.info("%s: shards layout recorded (%d old files removed at the end)", self.description, deleted)
        return MigrationStep(deleted=deleted)

    def _retarget_card(self, card: Path) -> None:
        try:
            text = card.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: the dataset card cannot be read (%s): it is left as it is", self.description, exc)
            return
        try:
            retargeted = retarget_card(text, ply=(self.root / PLY_DIR).is_dir())
        except CardYamlError as exc:
            log.warning("%s: the dataset card is left as it is: %s", self.description, exc)
            return
        log.info("%s: the dataset card is hand-written: its text is kept, its configs now name the "
                 "index and the shards", self.description)
        if retargeted is not None:
            atomic_write(card, retargeted.encode("utf-8"))

