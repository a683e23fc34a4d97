"""``remove`` and ``gc`` on the local store: a takedown, and dropping leases nobody can rely on.

Order (each step is safe to repeat, so running ``remove`` again finishes an interrupted one):
1. under the store's maintenance claim (no compaction meanwhile), ONE write transaction
   records the exclusions. This is the atomic step: from its commit on, no client publishes
   these ids again (publish skips excluded ids inside its own transaction, sources skip them
   through ``item_states``), and every reader of the ledger treats them as gone;
2. the index files that held their rows are regenerated from the ledger (which leaves
   excluded ids out), each replaced atomically;
3. the items' files are deleted (empty item folders too);
4. a second transaction deletes the items' ledger rows (their attribution metadata) and
   lowers the row counts of their shards. Until then a rerun still knows which files to
   delete; ``verify`` reports anything a crash left between the steps.
Items inside shards (the sharded layout) are taken down by ``local_shard_remove``: their new
tars and Parquet index files are staged before step 1, and step 1 also journals the swaps, stores
the kept rows' new members and deletes the removed rows, so ``open()`` rolls a crash forward.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

from ..errors import StoreError
from ..ledger.results import GcResult, RemoveResult
from ..publish import layout
from ..publish.index import FileRef, row_file_refs, row_from_json
from ..records import IndexRow, Lease
from . import local_schema as sql
from .local_files_index import keep_files_index
from .local_ledger import connect_ledger, maintenance_claim, rewrite_index_file
from .local_shard_remove import apply_takedown, discard, preview_takedown, record_takedown, stage_takedown

log = logging.getLogger(__name__)


def _shard_of(conn, ids: list[str]) -> dict[str, tuple[str, str, list[FileRef], IndexRow]]:
    """id → (shard, shard state, files, row) for the ids that have a ledger row."""
    out = {}
    for part in sql.chunks(ids):
        for item_id, line, shard, state in conn.execute(
            f"""SELECT i.id, i.row, i.shard, s.state FROM items i JOIN shards s ON s.name = i.shard
                WHERE i.id IN ({sql.marks(len(part))})""", part):
            row = row_from_json(line)
            out[item_id] = (shard, state, row_file_refs(row), row)
    return out


def _delete_files(root: Path, refs: list[FileRef]) -> list[str]:
    deleted = []
    folders = set()
    for ref in refs:
        path = root / layout.check_repo_path(ref.path)
        if path.is_file():
            path.unlink()
            deleted.append(ref.path)
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        while folder != root and folder.name != layout.COORD_DIR:
            try:
                folder.rmdir()  # only empty folders go
            except OSError:
                break
            folder = folder.parent
    return deleted


def _existing_files(root: Path, refs: list[FileRef]) -> list[str]:
    return sorted({ref.path for ref in refs if (root / layout.check_repo_path(ref.path)).is_file()})


def _sharded(found: dict[str, tuple[str, str, list[FileRef], IndexRow]]) -> dict[str, IndexRow]:
    """The found rows that live inside shards (a takedown rewrites their tars)."""
    return {i: row for i, (*_, row) in found.items() if row.shard_path or row.ply_shard_path}


def _index_names(index_path: str, found: dict[str, tuple[str, str, list[FileRef], IndexRow]]) -> set[str]:
    index_name = posixpath.basename(index_path)
    return {index_name if state != "committed" else shard for shard, state, *_ in found.values()}


def preview_remove_local(root: Path, index_path: str, item_ids: list[str]) -> RemoveResult:
    """What ``remove_local`` would do with these ids now (``dry_run``): reads only."""
    root = Path(root)
    ids = sorted({layout.check_item_id(i) for i in item_ids})
    if not ids:
        raise StoreError("remove: no item id given")
    conn = connect_ledger(root)
    try:
        with sql.read_tx(conn):
            before = _excluded(conn, ids)
            found = _shard_of(conn, ids)
            takedown = preview_takedown(root, conn, _sharded(found))
            names = _index_names(index_path, found) | _index_names(index_path, _shard_of(conn, sorted(takedown.seen)))
    finally:
        conn.close()
    return RemoveResult(
        removed=[i for i in ids if i in found],
        already_removed=[i for i in ids if i not in found and i in before],
        blocked=[i for i in ids if i not in found and i not in before],
        files_deleted=_existing_files(root, [ref for *_, refs, _ in found.values() for ref in refs]) + takedown.drops,
        index_files_rewritten=sorted(names) + takedown.index_files,
        shards_rewritten=[s for s in takedown.shards if s not in takedown.drops],
        dry_run=True,
    )


def _excluded(conn, ids: list[str]) -> set[str]:
    return {r[0] for part in sql.chunks(ids) for r in conn.execute(
        f"SELECT item_id FROM exclusions WHERE item_id IN ({sql.marks(len(part))})", part)}


def remove_local(root: Path, index_path: str, item_ids: list[str], reason: str, now: float) -> RemoveResult:
    """Take the given ids down from a local store (see the module docstring for the order)."""
    root = Path(root)
    ids = sorted({layout.check_item_id(i) for i in item_ids})
    if not ids:
        raise StoreError("remove: no item id given")
    reason = reason.strip() or "removal requested"
    result = RemoveResult()
    conn = connect_ledger(root)
    try:
        with maintenance_claim(conn, now):
            with sql.read_tx(conn):
                sharded = _sharded(_shard_of(conn, ids))
            takedown = stage_takedown(root, conn, sharded, root / layout.COORD_DIR / "staging") if sharded else None
            try:
                with sql.write_tx(conn):
                    before = _excluded(conn, ids)
                    sql.add_exclusions(conn, ids, reason, now)
                    found = _shard_of(conn, ids)
                    if set(_sharded(found)) != set(sharded):
                        raise StoreError("remove: these items changed while their shards were rewritten; run it again")
                    noted = record_takedown(conn, root, takedown, now) if takedown else []
            except BaseException:
                discard(takedown)
                raise
            if takedown:
                apply_takedown(root, conn, takedown)
            result.removed = [i for i in ids if i in found]
            result.already_removed = [i for i in ids if i not in found and i in before]
            result.blocked = [i for i in ids if i not in found and i not in before]
            names = _index_names(index_path, found)
            with sql.read_tx(conn):
                names |= {posixpath.basename(index_path) if sql.shard_state(conn, n) != "committed" else n
                          for n in noted}
                result.index_files_rewritten = [n for n in sorted(names)
                                                if rewrite_index_file(root, index_path, conn, n)]
            files = {i: v for i, v in found.items() if i not in sharded}  # per-item files (the files layout)
            result.files_deleted = _delete_files(root, [ref for *_, refs, _ in files.values() for ref in refs])
            with sql.write_tx(conn):
                for shard, n in _count_by_shard(files).items():
                    conn.execute("UPDATE shards SET rows = MAX(0, rows - ?) WHERE name = ?", (n, shard))
                for part in sql.chunks(sorted(files)):
                    conn.execute(f"DELETE FROM items WHERE id IN ({sql.marks(len(part))})", part)
                sql.drop_rewrites(conn, noted)
            if takedown:
                result.files_deleted += takedown.drops
                result.index_files_rewritten += takedown.index_files
                result.shards_rewritten = [s for s in takedown.shards if s not in takedown.drops]
    finally:
        conn.close()
    keep_files_index(root, index_path)  # the removed rows' previews gone from the typed index too
    log.debug("removed %d items (%d more ids excluded) from %s: %s", len(result.removed), len(result.blocked),
             root, reason)
    return result


def _count_by_shard(found: dict[str, tuple[str, str, list[FileRef], IndexRow]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for shard, *_ in found.values():
        counts[shard] = counts.get(shard, 0) + 1
    return counts


def exclusions(root: Path) -> list[tuple[str, str, float]]:
    """Every excluded id with its reason and time (the persistent removal list)."""
    conn = connect_ledger(root)
    try:
        return [(str(a), str(b), float(c)) for a, b, c in
                conn.execute("SELECT item_id, reason, at FROM exclusions ORDER BY at, item_id")]
    finally:
        conn.close()


def gc_local(root: Path, now: float) -> GcResult:
    """Delete expired leases and leases on done units, in one write transaction."""
    result = GcResult()
    conn = connect_ledger(Path(root))
    try:
        with sql.write_tx(conn):
            done = {r[0] for r in conn.execute(
                "SELECT l.unit FROM leases l JOIN units_done d ON d.unit = l.unit")}
            leases = [Lease(*r) for r in conn.execute(
                "SELECT unit, owner, nonce, acquired_at, expires_at FROM leases ORDER BY unit")]
            for lease in leases:
                if lease.unit in done:
                    result.on_done_units.append(lease)
                elif lease.expired(now):
                    result.expired.append(lease)
                else:
                    continue
                conn.execute("DELETE FROM leases WHERE unit = ? AND nonce = ?", (lease.unit, lease.nonce))
    finally:
        conn.close()
    log.debug("gc: %d expired leases, %d leases on done units removed", len(result.expired),
             len(result.on_done_units))
    return result
