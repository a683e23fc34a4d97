"""The local store: a folder with the published layout plus a SQLite ledger in ``.coord/``.

Publish order (invariant 1):
1. the staging of every file is journaled (``intents``), then each file is hard-linked (or
   copied) to a hidden temp name under ``.coord/staging/`` (beside its destination if that is
   on another filesystem) and fsynced, outside any lock;
2. ONE write transaction decides which ids are new (ids already published or excluded are
   skipped, their published files untouched), renames the new items' files into place,
   fsyncs their folders, and records items, shard name, failures, units done, followups and
   lease renewals, and clears the journal; files are in place before the commit records them;
3. after the commit, the batch's rows are written as a NEW uniquely named index shard
   (invariant 2: no shared file is rewritten on the publish path).
SQLite is the authority. ``open()`` repairs a crash: it undoes journaled staging of dead
processes (temps, and files placed for ids never recorded), rebuilds missing committed
shards from the ledger, removes unrecorded shards and finishes an interrupted compaction.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LeaseConflict, StoreError
from ..publish import layout
from ..publish.card import INDEX_CONFIG_GLOB, CardFacts
from ..publish.index import row_files, row_from_json, row_to_json
from ..publish.layout_choice import FILES, SHARDS, check_layout
from ..records import Batch, Failure, Followup, IndexRow, ItemState, ProcessedItem
from . import local_schema as sql
from .base import PublishPacing, PublishReceipt
from .item_checks import beside_published, publish_failure, screen_items, units_held_back
from .local_admin import LocalAdmin
from .local_card import SNAPSHOT_YAML, LocalCard
from .local_files_index import keep_files_index
from .local_leases import HOST, LocalLeases
from .local_ledger import existing_ledger
from .local_maintenance import RETIRE, LocalMaintenance
from .local_schema import StoreCounts
from .local_shard_remove import TAKEDOWN, LocalTakedown, end_replacement, record_takedown, stage_replacement
from .local_shards import in_shards, local_layout, pack_step, step_files
from .local_staging import Recorded, Staged, replaces, stage_files
from .shard_packer import ShardPacker

__all__ = ["LocalStore", "StoreCounts"]

from ..fsio import atomic_write, fsync_dir, pid_alive, tmp_for

log = logging.getLogger(__name__)

# Kept copies of files that a ``--redo`` publish of older versions replaced in place; open() still
# restores them after a crash (today a redo places changed files under new names instead).
_BACKUP_PREFIX = "redo-"


def _names(recorded: tuple[str, str] | None, path: str) -> bool:
    """Whether a recorded (shard, row) names ``path``: a file placed for it is no leftover."""
    return recorded is not None and path in step_files(row_from_json(recorded[1]))


class LocalStore(LocalLeases, LocalCard, LocalMaintenance):
    """Folder + SQLite store; several processes on one machine may share one root."""

    def __init__(
        self,
        root: Path,
        *,
        index_path: str = "data/train.jsonl",
        clock: Callable[[], float] = time.time,
        card_title: str = "SHARP Gaussian splats",
        card_sources: list[str] | None = None,
        busy_timeout_s: float = 60.0,
        dataset_layout: str = "",
        new_layout: str = "files",
        create: bool = True,
    ) -> None:
        self.root = Path(root)
        self._create = create  # False: ``open`` refuses a folder that holds no store (an operation's typo)
        self.index_path = index_path
        layout.index_glob(index_path)  # validates: a .jsonl path inside the repo
        self.description = f"local:{self.root}"
        self._clock = clock
        self._card_title = card_title
        self._card_sources = list(card_sources or [])
        self._busy_timeout_s = busy_timeout_s
        self._layout_asked = check_layout(dataset_layout)
        self._new_layout = check_layout(new_layout) or FILES
        self.layout = FILES if dataset_layout == FILES else ""  # decided by ``open`` from the dataset
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._opened = False
        self._card: CardFacts | None = None
        self._admin: LocalAdmin | None = None

    # -- connections and paths ---------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if not self._opened:
            raise StoreError(f"{self.description}: call open() first")
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            # One connection per thread (and never one inherited across fork).
            conn = sql.connect(self.root / layout.ledger_path(), self._busy_timeout_s)
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def open(self) -> None:
        """Create the layout if missing and repair what a crash left half-done. Raises ``ConfigError``
        when the store's folder cannot be one (a file, or a folder this user cannot write); ``StoreError``
        when it holds no store and the store was made with ``create=False``."""
        if not self._create:
            existing_ledger(self.root)
        try:
            (self.root / layout.COORD_DIR / "staging").mkdir(parents=True, exist_ok=True)
            self._data_dir.mkdir(parents=True, exist_ok=True)
            self._opened = True
            sql.ensure_schema(self._conn())
        except (OSError, sqlite3.Error) as exc:
            # The commonest cause of a traceback here is a mistyped STORE: say what is wrong with it.
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"STORE local:{self.root} cannot be used as a local store: {why}"
                              f"{f' ({exc.filename})' if isinstance(exc, OSError) and exc.filename else ''}") from exc
        has_rows = self.counts().published > 0 or any(self._data_dir.glob("*.jsonl"))
        self.layout = local_layout(self.root, self._layout_asked, has_rows, self._new_layout)
        self._repair()
        keep_files_index(self.root, self.index_path)  # what a killed step or operation left, made again
        if not (self.root / layout.README_PATH).exists():
            self.write_card()
        self._card = self._read_card_facts()
        text = (self.root / layout.README_PATH).read_text("utf-8") if self._card is not None else ""
        if self._card is not None and (INDEX_CONFIG_GLOB not in text or "; splats=" not in text):
            # A generated card from before the typed index or the declared shard features: made again.
            self.write_card()
        elif not (self.root / SNAPSHOT_YAML).exists():
            self._write_snapshot(f"opened-{secrets.token_hex(6)}")

    @property
    def is_open(self) -> bool:
        return self._opened

    def admin(self) -> LocalAdmin:
        """The operation commands on this store (``status``, ``verify``, ``remove``, ...)."""
        if self._admin is None:
            self._admin = LocalAdmin(self)
        return self._admin

    def budget_report(self) -> dict[str, Any]:
        return {}  # no rate-limited backend

    def publish_pacing(self) -> PublishPacing:
        """No commit budget: the publisher keeps its fixed batch size."""
        return PublishPacing()

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
        self._opened = False

    # -- item state --------------------------------------------------------------------------

    def item_states(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        """Known state of each id; ids never seen are absent. Published wins over failures."""
        conn = self._conn()
        with sql.read_tx(conn):
            return sql.item_states(conn, sorted(set(item_ids)))

    def record_failures(self, failures: list[Failure], client_id: str) -> None:
        """Upsert failures, counting attempts (a later publish of the id still wins)."""
        conn = self._conn()
        with sql.write_tx(conn):
            sql.upsert_failures(conn, failures, client_id, self._clock())

    def exclude(self, item_ids: Iterable[str], reason: str) -> None:
        """Record removal requests: excluded ids are never published again and are left out of
        the next compaction (shard files are not rewritten on the spot)."""
        conn = self._conn()
        with sql.write_tx(conn):
            sql.add_exclusions(conn, item_ids, reason, self._clock())

    def pending_followups(self, kind: str) -> list[Followup]:
        rows = self._conn().execute(
            "SELECT kind, item_id, payload, client, created_at FROM followups WHERE kind = ? AND done = 0 "
            "ORDER BY seq", (kind,))
        return [Followup(*row) for row in rows]

    def complete_followups(self, done: list[Followup]) -> None:
        conn = self._conn()
        with sql.write_tx(conn):
            sql.finish_followups(conn, done)

    def counts(self) -> StoreCounts:
        """Totals from SQL aggregates (no row is read)."""
        conn = self._conn()
        with sql.read_tx(conn):
            return sql.totals(conn)

    def rows(self) -> Iterator[IndexRow]:
        """Every published, non-excluded index row, by publish time then id (streamed)."""
        conn = sql.connect(self.root / layout.ledger_path(), self._busy_timeout_s)
        try:
            cur = conn.execute("""SELECT row FROM items WHERE id NOT IN (SELECT item_id FROM exclusions)
                                  ORDER BY published_at, id""")
            for (line,) in cur:
                yield row_from_json(line)
        finally:
            conn.close()

    # -- publish -----------------------------------------------------------------------------

    def publish(self, batch: Batch) -> PublishReceipt:
        """One atomic step: files staged, then one transaction that places them and writes the
        batch's new index shard before it commits. An item with a problem fails alone."""
        items, failed = screen_items(batch.items)
        holders = self._holders(items)
        items = [layout.placed(pi, holders) for pi in items]  # the hub store's fan-out rule too
        conn = self._conn()
        with sql.read_tx(conn):
            skip = self._skipped(conn, items, batch.redo)
            old_rows = sql.published_rows(conn, [pi.row.id for pi in items if pi.row.id not in skip])
        # A replaced item's changed files get new names: its old row keeps naming intact bytes
        # until the commit that names the new ones (readers never see other than the ledger says).
        items = [beside_published(pi, old_rows[pi.row.id][1]) if pi.row.id in old_rows else pi for pi in items]
        packer, takedown, claim = None, None, ""
        if self.layout == SHARDS:
            items, packer, claim, takedown = self._sharded(conn, items, skip, old_rows, batch.client_id, failed)
        plan, staged = self._plan_and_journal(conn, items, skip, failed)
        by_id = {pi.row.id: pi for pi in items}
        outcome: Recorded | None = None
        try:
            for item_id, entries in list(plan.items()):
                problem = stage_files(entries)
                if problem and self.layout == SHARDS:  # the carrier holds every item's bytes
                    raise StoreError(f"{self.description}: publish failed: {problem}")
                if problem:
                    failed.append(publish_failure(by_id[item_id], "file_changed", f"item {item_id}: {problem}",
                                                  transient=True))
                    del plan[item_id]
            outcome = Recorded(batch, [pi for pi in items if pi.row.id in plan], failed, takedown=takedown)
            with sql.write_tx(conn):
                self._record_batch(conn, outcome, plan, self._clock())
            outcome.committed = True
        except OSError as exc:  # disk full, permissions, ...: the batch is not published
            raise StoreError(f"{self.description}: publish failed: {exc}") from exc
        finally:
            end_replacement(self.root, conn, claim, takedown, bool(outcome and outcome.committed),
                            self._drop_maintenance)
            if packer is not None:
                packer.clear()
            for e in staged:
                e.tmp.unlink(missing_ok=True)
            if staged and not (outcome and outcome.committed):
                if outcome and outcome.shard_written:
                    (self._data_dir / outcome.shard).unlink(missing_ok=True)
                self._settle_intents([self._rel(e.tmp) for e in staged])
        self._after_commit(outcome, staged)
        keep_files_index(self.root, self.index_path)
        new_ids = {r[0] for r in outcome.rows}
        self._refresh_card([pi.row for pi in items if pi.row.id in new_ids])
        return PublishReceipt(published_ids=[pi.row.id for pi in items if pi.row.id in new_ids],
                              commit=outcome.shard if outcome.rows else "", failed=failed,
                              units_held=outcome.units_held, replaced_ids=sorted(outcome.replaced))

    def _sharded(self, conn: sqlite3.Connection, items: list[ProcessedItem], skip: set[str],
                 old_rows: dict[str, tuple[str, str]], client_id: str, failed: list[Failure],
                 ) -> tuple[list[ProcessedItem], ShardPacker | None, str, LocalTakedown | None]:
        """The sharded layout's part of a step: its items packed (a refused one added to ``failed``),
        and a ``--redo``'s old samples staged to leave their tars (``stage_replacement``)."""
        items, refused, packer = self._packed(items, skip, client_id)
        failed.extend(refused)
        replaced = in_shards(old_rows, [pi.row.id for pi in items if pi.row.id not in skip])  # packed ones
        try:
            claim, takedown = stage_replacement(self.root, conn, replaced, self._take_maintenance,
                                                self._drop_maintenance, self.description)
        except BaseException:
            if packer is not None:
                packer.clear()
            raise
        return items, packer, claim, takedown

    def _plan_and_journal(self, conn: sqlite3.Connection, items: list[ProcessedItem], skip: set[str],
                          failed: list[Failure]) -> tuple[dict[str, list[Staged]], list[Staged]]:
        """Where each item's files go (an item with a bad path added to ``failed``), and that staging
        journaled before any file is staged."""
        plan: dict[str, list[Staged]] = {}
        for pi in items:
            if pi.row.id in skip:
                continue
            try:
                plan[pi.row.id] = self._plan_item(pi)
            except StoreError as exc:
                failed.append(publish_failure(pi, "bad_path", str(exc), transient=False))
            except OSError as exc:  # a folder that cannot be made (a file in the way, disk full): nothing staged yet
                raise StoreError(f"{self.description}: publish failed: {exc}") from exc
        staged = [e for entries in plan.values() for e in entries]
        if staged:
            # Journal the staging first: whatever a crash leaves behind, open() can find it.
            with sql.write_tx(conn):
                sql.add_intents(conn, [(self._rel(t), self._rel(e.final), e.item_id, os.getpid(), self._clock())
                                       for e in staged for t in (e.tmp,)])
        return plan, staged

    def _packed(self, items: list[ProcessedItem], skip: set[str],
                client_id: str) -> tuple[list[ProcessedItem], list[Failure], ShardPacker | None]:
        """The step's new items (a ``--redo``'s replacements too) as shards (``local_shards.pack_step``)."""
        new = [pi for pi in items if pi.row.id not in skip]
        if not new:
            return items, [], None
        packed, refused, packer = pack_step(new, client_id, self.root / layout.COORD_DIR / "staging")
        return packed + [pi for pi in items if pi.row.id in skip], refused, packer

    def _skipped(self, conn: sqlite3.Connection, items: list[ProcessedItem], redo: str) -> set[str]:
        """Ids this publish leaves alone: excluded ones, and published ones it does not replace."""
        ids = [pi.row.id for pi in items]
        models = sql.published_models(conn, ids)
        skip = sql.excluded_ids(conn, ids)
        for pi in items:
            old = models.get(pi.row.id)
            if old is not None and not replaces(redo, old, (pi.row.predictor, pi.row.model_version)):
                skip.add(pi.row.id)
        return skip

    def _holders(self, items: list[ProcessedItem]) -> dict[str, int]:
        """Item folders now in each folder these items land in (``layout.placed`` counts them)."""
        out: dict[str, int] = {}
        for pi in items:
            for pf in pi.files:
                holder = layout.holder_of(pf.repo_path, pi.row.id)
                if holder is None or holder in out:
                    continue
                try:
                    with os.scandir(self.root / holder) as entries:
                        out[holder] = sum(1 for e in entries if not e.name.startswith(".") and e.is_dir())
                except (FileNotFoundError, NotADirectoryError):
                    out[holder] = 0
        return out

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _plan_item(self, pi: ProcessedItem) -> list[Staged]:
        """Where each file goes and the temp name it is staged under first."""
        entries = []
        index_dir = posixpath.dirname(self.index_path)
        for pf in pi.files:
            repo_path = layout.check_repo_path(pf.repo_path)
            if (repo_path.split("/", 1)[0] == layout.COORD_DIR or repo_path == layout.README_PATH
                    or posixpath.dirname(repo_path) == index_dir):
                raise StoreError(f"item file {repo_path} would land among the store's own files")
            final = self.root / repo_path
            final.parent.mkdir(parents=True, exist_ok=True)
            entries.append(Staged(pi.row.id, pf, self._tmp_for_item(final), final))
        return entries

    def _tmp_for_item(self, final: Path) -> Path:
        # Stage under .coord/ (out of every reader's sight) unless the destination is on
        # another filesystem, where a rename could not move it: then stage beside it.
        staging = self.root / layout.COORD_DIR / "staging"
        if os.stat(staging).st_dev == os.stat(final.parent).st_dev:
            return tmp_for(staging / final.name)
        return tmp_for(final)

    def _record_batch(self, conn: sqlite3.Connection, rec: Recorded, plan: dict[str, list[Staged]],
                      now: float) -> None:
        """Inside the write transaction: place new items' files, write the batch's index shard,
        then record everything (files and shard are in place before the commit names them)."""
        batch = rec.batch
        skip = self._skipped(conn, rec.items, batch.redo)
        new = [pi for pi in rec.items if pi.row.id not in skip]
        old_rows = sql.published_rows(conn, [pi.row.id for pi in new])
        if self.layout == SHARDS:
            # Published in shards by another process since staging: no takedown covers it, so left alone.
            late = set(in_shards(old_rows, list(old_rows))) - set(rec.takedown.removed if rec.takedown else [])
            skip |= late
            new = [pi for pi in new if pi.row.id not in late]
            old_rows = {i: v for i, v in old_rows.items() if i not in late}
        dirs: set[Path] = set()
        # Shards hold the whole step: placed even if another process published one of its ids meanwhile.
        for pi in (rec.items if self.layout == SHARDS else new):
            for e in plan[pi.row.id]:
                os.replace(e.tmp, e.final)  # a path an old row names gets the same bytes (see beside_published)
                dirs.add(e.final.parent)
        for folder in sorted(dirs):
            fsync_dir(folder)
        rec.shard = posixpath.basename(
            layout.shard_path(self.index_path, batch.client_id, now, secrets.token_hex(6)))
        for pi in new:
            row = pi.row if pi.row.client_id else dataclasses.replace(pi.row, client_id=batch.client_id)
            rec.rows.append((row.id, row.unit, row.source, row_to_json(row), rec.shard, now, batch.client_id,
                             row.predictor, row.model_version))
        rec.rows.sort()
        if rec.rows:
            # Written before the commit: a reader never sees fewer rows than the ledger has items.
            atomic_write(self._data_dir / rec.shard, "".join(r[3] + "\n" for r in rec.rows).encode("utf-8"))
            rec.shard_written = True
            self._write_snapshot(rec.shard)
        rec.replaced = {i: (shard, row) for i, (shard, row) in old_rows.items()}
        # The old rows' files go after the commit, once no index file shows those rows (journaled
        # with it, so open() finishes the job after a crash).
        keep = {self._rel(e.final) for entries in plan.values() for e in entries}
        retire = [(RETIRE + path, path, i, os.getpid(), now) for i, (_, line) in old_rows.items()
                  for path in row_files(row_from_json(line)) if path not in keep]
        rec.retired = [r[0] for r in retire]
        sql.drop_intents(conn, rec.retired)  # an earlier redo's entry for the same path, not yet done
        sql.add_intents(conn, retire)
        sql.note_rewrites(conn, sorted({shard for shard, _ in old_rows.values()}))
        if rec.takedown is not None:  # the old samples leave their tars with this commit (journaled)
            record_takedown(conn, self.root, rec.takedown, now)
        sql.insert_items(conn, rec.rows, rec.shard, batch.client_id, now)
        sql.drop_intents(conn, [self._rel(e.tmp) for entries in plan.values() for e in entries])
        sql.upsert_failures(conn, [*batch.failures, *rec.failures], batch.client_id, now)
        units_done, rec.units_held = units_held_back(batch.units_done, rec.failures)
        sql.mark_units_done(conn, units_done, batch.client_id, now)
        sql.add_followups(conn, [f for f in batch.followups if f.item_id not in skip], now, batch.client_id)
        sql.finish_followups(conn, batch.followups_done)
        renew = [*batch.renew_units, *rec.units_held]
        if renew and batch.lease_ttl_s > 0:
            sql.renew_leases(conn, renew, batch.client_id, now + batch.lease_ttl_s, os.getpid(), HOST)

    def _after_commit(self, rec: Recorded, staged: list[Staged]) -> None:
        """Drop the replaced rows from the index files that held them, then the files that only
        those rows named (in this order, so no index row ever names a deleted file)."""
        if not rec.replaced:
            return
        try:
            self._apply_rewrites()
        except (OSError, StoreError, LeaseConflict) as exc:
            log.warning("replaced rows stay in their old index files for now (%s); open() removes them", exc)
            return  # their files stay too: the open() that rewrites those index files deletes them
        try:
            self.retire_replaced_files(rec.retired)
        except (OSError, StoreError) as exc:
            log.warning("files of replaced rows stay for now (%s); open() deletes them", exc)

    def _settle_intents(self, tmps: list[str] | None = None) -> None:
        """Undo staging that never got recorded: temps go, files placed for ids that are still
        unrecorded go, and files a ``--redo`` step replaced get their kept copy back. Runs under
        the write lock, so no publisher is placing files."""
        conn = self._conn()
        try:
            with sql.write_tx(conn):
                for tmp, final, item_id, pid in sql.intents(conn, tmps):
                    if (tmps is None and pid_alive(pid)) or tmp.startswith((RETIRE, *TAKEDOWN)):
                        continue  # a live process is mid-publish; retired files wait; takedowns roll forward
                    kept = self.root / tmp
                    if posixpath.basename(tmp).startswith("." + _BACKUP_PREFIX):
                        if kept.exists():
                            os.replace(kept, self.root / final)
                    else:
                        kept.unlink(missing_ok=True)
                        if not _names(sql.published_rows(conn, [item_id]).get(item_id), final):
                            (self.root / final).unlink(missing_ok=True)
                    sql.drop_intents(conn, [tmp])
        except (StoreError, OSError) as exc:
            log.warning("could not clean up after a failed publish (%s); open() will", exc)
