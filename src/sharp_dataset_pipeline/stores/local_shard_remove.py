"""A takedown inside shards on the local store (``remove`` in the sharded layout, issue #14).

The removed items' samples leave their tars: each shard holding one is rewritten without them
(``shard_rewrite.plan_takedown``) or deleted when nothing is left, the kept rows of those shards get
their new ``members`` in the ledger, and every Parquet index file holding an affected row is
rewritten (or deleted). Order (crash-safe, kill -9 included):
1. under the maintenance claim, the new tars and Parquet files are written to pid-tagged temps in
   ``.coord/staging/`` and fsynced (a crash here leaves only temps, which ``open()`` removes: the
   store is untouched);
2. the caller's ONE write transaction (the one that records the exclusions) journals each swap
   (``SWAP`` staged → final) and deletion (``DROP``) as intents, stores the kept rows' new rows,
   deletes the removed rows and notes their JSONL index files for a rewrite. This is the atomic step;
3. after it, the swaps and deletions are carried out and their intents dropped. A crash in between
   is rolled forward by ``finish_takedowns`` (run first by ``open()``), and the noted JSONL files are
   regenerated from the ledger by the store's rewrite path: after a reopen the item is fully gone.

``run --redo`` of items in shards reuses these steps (``stage_replacement`` / ``end_replacement``): the
publish step's transaction records the takedown of the old rows' samples (without excluding the ids)
with the new rows, whose samples are in the step's new tars.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import StoreError
from ..fsio import fsync_dir, fsync_path, pid_alive, temp_writer, tmp_for
from ..publish.files_index import is_twin_path
from ..publish.index import row_from_json, row_to_json
from ..publish.layout import COORD_DIR
from ..publish.parquet_index import read_index
from ..publish.shard_layout import INDEX_DIR
from ..publish.shard_rewrite import Takedown, emptied_shards, plan_takedown, rewrite_index, takedown_drops
from ..records import IndexRow
from . import local_schema as sql

log = logging.getLogger(__name__)

# Intent prefixes of a committed takedown (``intents.tmp``): rolled forward, never undone.
SWAP = "swap:"
DROP = "drop:"
TAKEDOWN = (SWAP, DROP)


@dataclass
class LocalTakedown:
    """What one takedown staged: ``swaps`` (staged temp → final repo path), ``drops`` (repo paths to
    delete), ``rows`` (kept id → new row JSON) and ``seen`` (every row of the affected shards as planned
    against, so the commit can tell that nothing changed meanwhile)."""

    removed: list[str]
    seen: dict[str, str]
    swaps: list[tuple[Path, str]] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    rows: dict[str, str] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    index_files: list[str] = field(default_factory=list)


def shard_rows(conn: sqlite3.Connection, shards: list[str]) -> dict[str, str]:
    """id → row JSON of every ledger row naming one of ``shards`` (as splat or PLY shard)."""
    out: dict[str, str] = {}
    for part in sql.chunks(shards):
        q = sql.marks(len(part))
        for item_id, line in conn.execute(
                f"""SELECT id, row FROM items WHERE json_extract(row, '$.shard_path') IN ({q})
                    OR json_extract(row, '$.ply_shard_path') IN ({q})""", (*part, *part)):
            out[item_id] = line
    return out


def _index_paths(root: Path) -> list[str]:
    base = root / INDEX_DIR
    if not base.is_dir():
        return []
    return [p.relative_to(root).as_posix() for p in sorted(base.rglob("*.parquet"))
            if not p.name.startswith(".") and not is_twin_path(p.relative_to(root).as_posix())]


def _parquet_ids(path: Path) -> set[str]:
    with path.open("rb") as fh:
        return {e.row.id for e in read_index(fh)}


def preview_takedown(root: Path, conn: sqlite3.Connection, removed: dict[str, IndexRow]) -> LocalTakedown:
    """What a takedown of ``removed`` would rewrite and delete (reads only; no shard is rewritten)."""
    if not removed:
        return LocalTakedown([], {})
    drops = takedown_drops(removed.values())
    seen = shard_rows(conn, sorted(drops))
    rows = [row_from_json(line) for line in seen.values()]
    out = LocalTakedown(sorted(removed), seen, shards=sorted(drops), drops=emptied_shards(drops, rows))
    touched = set(seen)
    out.index_files = [p for p in _index_paths(root) if _parquet_ids(root / p) & touched]
    return out


def stage_takedown(root: Path, conn: sqlite3.Connection, removed: dict[str, IndexRow],
                   staging: Path) -> LocalTakedown:
    """Step 1: the new tars and Parquet files written (fsynced) under ``staging``; reads the ledger in
    one read transaction. Raises ``StoreError`` for a shard that cannot be read or rewritten."""
    with sql.read_tx(conn):
        seen = shard_rows(conn, sorted(takedown_drops(removed.values())))
    work = Path(tmp_for(staging / "takedown"))
    try:
        plan = plan_takedown(list(removed.values()), [row_from_json(v) for v in seen.values()],
                             lambda p: root / p, work)
        out = LocalTakedown(sorted(removed), seen, shards=plan.shards, drops=list(plan.deleted))
        for shard, new in sorted(plan.files.items()):
            out.swaps.append((_staged(new, staging / Path(shard).name), shard))
        for item_id, update in plan.updates.items():
            out.rows[item_id] = row_to_json(_with(row_from_json(seen[item_id]), update))
        _stage_index(root, set(removed), plan, staging, out)
    except BaseException:
        discard(out if "out" in locals() else None)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _with(row: IndexRow, update: dict[str, str]) -> IndexRow:
    return replace(row, members=update["members"])


def _staged(src: Path, beside: Path) -> Path:
    dst = tmp_for(beside)
    os.replace(src, dst)
    fsync_path(dst)
    return dst


def _stage_index(root: Path, drop_ids: set[str], plan: Takedown, staging: Path, out: LocalTakedown) -> None:
    for path in _index_paths(root):
        dst = tmp_for(staging / Path(path).name)
        with (root / path).open("rb") as src:
            left = rewrite_index(src, drop_ids, plan, lambda d=dst: d.open("wb"))
        if left is None:
            continue
        out.index_files.append(path)
        if left:
            fsync_path(dst)
            out.swaps.append((dst, path))
        else:
            out.drops.append(path)


def discard(takedown: LocalTakedown | None) -> None:
    """Remove a takedown's staged temps (it did not commit)."""
    for staged, _ in takedown.swaps if takedown else []:
        staged.unlink(missing_ok=True)


def record_takedown(conn: sqlite3.Connection, root: Path, takedown: LocalTakedown, now: float) -> list[str]:
    """Step 2, inside the caller's write transaction: journal the swaps and deletions, store the kept
    rows, delete the removed rows. Returns the JSONL index files (ledger shard names) to regenerate.
    Raises ``StoreError`` when the affected rows changed since staging (nothing is recorded then)."""
    now_rows = shard_rows(conn, takedown.shards)
    if now_rows != takedown.seen or not set(takedown.removed) <= set(now_rows):
        raise StoreError("remove: the shards of these items changed while they were rewritten; run it again")
    pid = os.getpid()
    sql.add_intents(conn, [(SWAP + _rel(root, staged), final, "", pid, now) for staged, final in takedown.swaps]
                    + [(DROP + final, final, "", pid, now) for final in takedown.drops])
    names = {str(r[0]) for part in sql.chunks(sorted(now_rows)) for r in conn.execute(
        f"SELECT DISTINCT shard FROM items WHERE id IN ({sql.marks(len(part))})", part)}
    for item_id, line in takedown.rows.items():
        conn.execute("UPDATE items SET row = ? WHERE id = ?", (line, item_id))
    for part in sql.chunks(takedown.removed):
        q = sql.marks(len(part))
        for shard, n in conn.execute(f"SELECT shard, COUNT(*) FROM items WHERE id IN ({q}) GROUP BY shard",
                                     part).fetchall():
            conn.execute("UPDATE shards SET rows = MAX(0, rows - ?) WHERE name = ?", (n, shard))
        conn.execute(f"DELETE FROM items WHERE id IN ({q})", part)
    sql.note_rewrites(conn, sorted(names))
    return sorted(names)


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def apply_takedown(root: Path, conn: sqlite3.Connection, takedown: LocalTakedown) -> None:
    """Step 3: the journaled swaps and deletions carried out, then their intents dropped."""
    entries = [(SWAP + _rel(root, s), f) for s, f in takedown.swaps] + [(DROP + f, f) for f in takedown.drops]
    _carry_out(root, entries)
    with sql.write_tx(conn):
        sql.drop_intents(conn, [tmp for tmp, _ in entries])


def _carry_out(root: Path, entries: list[tuple[str, str]]) -> None:
    folders: set[Path] = set()
    for tmp, final in entries:
        dst = root / final
        if tmp.startswith(SWAP):
            staged = root / tmp[len(SWAP):]
            if staged.exists():  # gone: renamed already, before a crash
                os.replace(staged, dst)
        else:
            dst.unlink(missing_ok=True)
        folders.add(dst.parent)
    for folder in sorted(folders):
        if folder.is_dir():
            fsync_dir(folder)
            if not any(folder.iterdir()):
                folder.rmdir()  # a shard folder whose last shard went


def finish_takedowns(root: Path, conn: sqlite3.Connection) -> int:
    """Roll forward the committed takedowns of processes that died before carrying them out (run by
    ``open()`` before temps are cleaned: the staged files are temps), and drop dead removers' scratch
    folders. Returns the entries finished."""
    staging = root / COORD_DIR / "staging"
    for folder in staging.iterdir() if staging.is_dir() else []:
        writer = temp_writer(folder.name)  # a dead remover's scratch folder (``stage_takedown``)
        if folder.is_dir() and folder.name.startswith(".takedown") and writer is not None and not pid_alive(writer):
            shutil.rmtree(folder, ignore_errors=True)
    with sql.write_tx(conn):
        todo = [(tmp, final) for tmp, final, _, pid in sql.intents(conn)
                if tmp.startswith(TAKEDOWN) and not pid_alive(pid)]
        if not todo:
            return 0
        log.warning("finishing an interrupted remove: %d shard and index files", len(todo))
        _carry_out(root, todo)
        sql.drop_intents(conn, [tmp for tmp, _ in todo])
    return len(todo)



# A ``--redo`` step in shards waits this long for another process's compaction or remove to finish.
CLAIM_WAIT_S = 60.0


def stage_replacement(root: Path, conn: sqlite3.Connection, old: dict[str, IndexRow], take: Callable[[str], bool],
                      drop: Callable[[str], None], description: str) -> tuple[str, LocalTakedown | None]:
    """``run --redo`` inside shards: the ``old`` rows' samples leave their tars exactly as in a takedown,
    staged now (step 1), journaled by ``record_takedown`` in the publish step's transaction, carried out
    after it (``end_replacement``); the ids are not excluded. Held under the maintenance claim (``take``
    / ``drop``), so no compaction or remove rewrites those files meanwhile. Returns (claim, takedown)."""
    if not old:
        return "", None
    owner = f"redo-{os.getpid()}-{secrets.token_hex(4)}"
    deadline = time.monotonic() + CLAIM_WAIT_S
    while not take(owner):
        if time.monotonic() > deadline:
            raise StoreError(f"{description}: --redo waited too long for another process's compaction or remove")
        time.sleep(0.2)
    try:
        return owner, stage_takedown(root, conn, old, root / COORD_DIR / "staging")
    except BaseException:
        drop(owner)
        raise


def end_replacement(root: Path, conn: sqlite3.Connection, claim: str, takedown: LocalTakedown | None,
                    committed: bool, drop: Callable[[str], None]) -> None:
    """After the publish step: a committed replacement's swaps carried out (failing that, the next
    ``open()`` rolls them forward), an uncommitted one's staged files removed; then the claim goes."""
    try:
        if takedown is not None and committed:
            try:
                apply_takedown(root, conn, takedown)
            except (OSError, StoreError) as exc:
                log.warning("old samples of replaced items stay in their shards for now (%s); open() takes "
                            "them out", exc)
        elif takedown is not None:
            discard(takedown)
    finally:
        if claim:
            drop(claim)
