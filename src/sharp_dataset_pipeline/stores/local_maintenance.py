"""The local store's maintenance: one maintainer at a time, compaction, crash repair, index rewrites.

A mixin of ``LocalStore`` (it uses the store's connection, clock, paths, intents and card helpers).
Order rules (the ledger is the authority):
- a publisher writes its index shard inside its own write transaction, so repair decides about
  shard files under the write lock, where no publish that may still commit has one half-done;
- compaction writes the new index before it deletes the merged shards: a reader (or a kill -9 in
  between) may see a row twice for a moment, never miss one, and ``open()`` finishes it;
- index files that still show rows replaced by a ``--redo`` publish (or changed by ``share``) are
  journaled (``rewrites``) in that step and rewritten from the ledger after it.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import LeaseConflict, StoreError
from ..fsio import atomic_file, atomic_write, fsync_dir, pid_alive, temp_writer
from ..publish import layout
from ..publish.files_index import FILES_INDEX_DIR
from ..publish.index import row_files, row_from_json
from ..publish.layout_choice import SHARDS
from ..publish.predecessor_index import PREDECESSOR_INDEX_HINT, holds_predecessor_rows
from . import local_schema as sql
from .local_files_index import keep_files_index
from .local_leases import drop_dead_leases_on_done_units
from .local_shard_remove import finish_takedowns
from .local_shards import compact_parquet, remove_dead_packs, sync_index_fields

log = logging.getLogger(__name__)

# Journal entries (``intents.tmp``) of files a ``--redo`` commit replaced: deleted once no index
# file shows the old row (``retire_replaced_files``), by the publisher or, after a crash, by open().
RETIRE = "retire:"


class LocalMaintenance:
    """Compaction and repair of ``LocalStore`` (see the module docstring for the order rules)."""

    root: Path
    index_path: str
    description: str
    layout: str
    _clock: Callable[[], float]
    _conn: Callable[[], sqlite3.Connection]
    _settle_intents: Callable[..., None]
    _write_snapshot: Callable[[str], None]
    _refresh_card: Callable[..., None]

    @property
    def _index_file(self) -> Path:
        return self.root / self.index_path

    @property
    def _data_dir(self) -> Path:
        return self._index_file.parent

    def _take_maintenance(self, owner: str) -> bool:
        """One maintainer at a time (compaction and repair); a dead holder's claim is void."""
        return sql.take_maintenance(self._conn(), owner, os.getpid(), self._clock()) is None

    def _drop_maintenance(self, owner: str) -> None:
        sql.drop_maintenance(self._conn(), owner)

    def compact(self) -> int:
        """Merge every committed shard into the index file; returns the rows in it.

        A publisher writes its shard inside its transaction, so every committed shard has its
        file. The new index replaces the old one before the merged shards are deleted, so a
        reader may briefly see a row twice but never misses one; a crash in between is finished
        by the next ``open()``.
        """
        if self._index_file.is_file() and holds_predecessor_rows(self._index_file.read_bytes()):
            # Compaction writes this file from the ledger: the predecessor's rows would be lost.
            raise StoreError(f"{self.description}: not compacting {self.index_path}: {PREDECESSOR_INDEX_HINT}")
        owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        if not self._take_maintenance(owner):
            raise LeaseConflict(f"{self.description}: another process is compacting")
        try:
            conn = self._conn()
            with sql.write_tx(conn):
                ready = [n for n in sql.shards_in(conn, "committed") if (self._data_dir / n).exists()]
                sql.set_shard_state(conn, ready, "compacting")
            count = self._finish_compaction()
            if self.layout == SHARDS:
                compact_parquet(self.root)  # the Parquet index of the sharded layout, under the same lock
                self._sync_index_fields(conn)  # share fields a dataset made before they were synced lacks
            keep_files_index(self.root, self.index_path)
        finally:
            self._drop_maintenance(owner)
        self._refresh_card()
        return count

    def _finish_compaction(self) -> int:
        """Write the index from every compacting/compacted shard's rows, then retire the shards."""
        conn = self._conn()
        count = 0
        with sql.read_tx(conn), atomic_file(self._index_file, fsync=True) as fh:
            merging = sql.shards_in(conn, "compacting")
            for line in sql.compacted_rows(conn):
                fh.write(line.encode("utf-8") + b"\n")
                count += 1
        # The new index first, then the merged shards go: a reader (or a kill -9 in between)
        # may see a row twice for a moment, never miss one.
        fsync_dir(self._data_dir)
        for name in merging:
            (self._data_dir / name).unlink(missing_ok=True)
        fsync_dir(self._data_dir)
        with sql.write_tx(conn):
            sql.set_shard_state(conn, merging, "compacted")
        log.debug("compacted %d shards; index has %d rows", len(merging), count)
        return count

    def _repair(self) -> None:
        """Bring the files in line with the ledger after a crash (the ledger is the authority)."""
        finish_takedowns(self.root, self._conn())  # first: its staged files are temps
        self._settle_intents()
        self._remove_dead_temps()
        drop_dead_leases_on_done_units(self._conn())
        owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        if not self._take_maintenance(owner):
            log.info("another process is maintaining %s; skipping shard repair", self.description)
            return
        try:
            conn = self._conn()
            if sql.shards_in(conn, "compacting"):
                self._finish_compaction()
            # Under the write lock: a publisher writes its shard inside its own write transaction,
            # so no shard file seen here belongs to a publish that may still commit.
            with sql.write_tx(conn):
                on_disk = {p.name for p in self._data_dir.iterdir()
                           if layout.is_shard_name(self.index_path, p.name)}
                committed = set(sql.shards_in(conn, "committed"))
                for name in sorted(on_disk - committed):
                    log.warning("removing index shard %s: not recorded as committed", name)
                    (self._data_dir / name).unlink(missing_ok=True)
                for name in sorted(committed - on_disk):
                    log.warning("rebuilding index shard %s from the ledger", name)
                    self._write_shard(name, sql.shard_lines(conn, name))
            self._apply_rewrites(owner)
            self.retire_replaced_files()
        finally:
            self._drop_maintenance(owner)

    def _write_shard(self, name: str, lines: list[str]) -> None:
        atomic_write(self._data_dir / name, "".join(line + "\n" for line in lines).encode("utf-8"))

    def apply_index_rewrites(self) -> None:
        """Rewrite the index files noted for a rewrite (``local_schema.note_rewrites``) from the
        ledger: each shard file once, the compacted index once for all its rows. If another process
        holds the maintenance claim, that process or the next ``open()`` does it."""
        self._apply_rewrites()

    def _apply_rewrites(self, owner: str | None = None) -> None:
        """Rewrite, from the ledger, the index files that still show rows a ``--redo`` publish replaced
        or ``share`` changed: a shard file, or the compacted index (by finishing a compaction); in the
        sharded layout the Parquet files showing changed share fields too (``sync_index_fields``)."""
        conn = self._conn()
        if not sql.pending_rewrites(conn):
            return
        mine = owner or f"{os.getpid()}-{secrets.token_hex(4)}"
        if owner is None and not self._take_maintenance(mine):
            return  # the maintainer, or the next open(), does it
        try:
            with sql.write_tx(conn):  # no publisher changes these shards meanwhile
                names = sql.pending_rewrites(conn)
                if self.layout == SHARDS:  # before the notes go: a crash leaves them, and open() syncs again
                    self._sync_index_fields(conn)
                compacted = [n for n in names if sql.shard_state(conn, n) in ("compacting", "compacted")]
                for name in names:
                    if sql.shard_state(conn, name) == "committed":
                        self._write_shard(name, sql.shard_lines(conn, name))
                sql.drop_rewrites(conn, [n for n in names if n not in compacted])
            if compacted:
                self._finish_compaction()
                with sql.write_tx(conn):
                    sql.drop_rewrites(conn, compacted)
            keep_files_index(self.root, self.index_path)
            self._write_snapshot(f"rewritten-{secrets.token_hex(6)}")
        finally:
            if owner is None:
                self._drop_maintenance(mine)

    def _sync_index_fields(self, conn: sqlite3.Connection) -> None:
        """The Parquet index's share fields brought in line with the ledger's rows (``sync_index_fields``)."""
        sync_index_fields(self.root, lambda ids: {
            i: row_from_json(line) for i, (_, line) in sql.published_rows(conn, list(ids)).items()})

    def retire_replaced_files(self, only: list[str] | None = None) -> None:
        """Delete the files of rows a ``--redo`` replaced (journaled as ``RETIRE`` intents by its
        commit) once no index file shows those rows any more; a file a committed row names again
        stays. ``only``: these journal entries (a publisher's own), else those of dead processes."""
        conn = self._conn()
        with sql.write_tx(conn):
            if sql.pending_rewrites(conn):
                return  # an index file may still show an old row: its files stay until it is rewritten
            for tmp, final, item_id, pid in sql.intents(conn, only):
                if not tmp.startswith(RETIRE) or (only is None and pid_alive(pid)):
                    continue
                recorded = sql.published_rows(conn, [item_id]).get(item_id)
                if recorded is None or final not in row_files(row_from_json(recorded[1])):
                    (self.root / final).unlink(missing_ok=True)
                sql.drop_intents(conn, [tmp])

    def _remove_dead_temps(self) -> None:
        # Temps live only in these places: staging, the index folder, the root (README), .coord (the
        # twins' sync record) and the twins' folder;
        # per-item temps staged beside their destination are journaled as intents instead.
        remove_dead_packs(self.root / layout.COORD_DIR / "staging")  # a killed sharded step's packed tars
        twins = self.root / FILES_INDEX_DIR  # a killed sync's twin (its record's temp sits in .coord)
        for folder in (self.root / layout.COORD_DIR / "staging", self._data_dir, self.root,
                       self.root / layout.COORD_DIR, *([twins] if twins.is_dir() else [])):
            for path in folder.iterdir():
                writer = temp_writer(path.name)
                if writer is not None and path.is_file() and not pid_alive(writer):
                    log.info("removing leftover temp file %s", path)
                    path.unlink(missing_ok=True)
