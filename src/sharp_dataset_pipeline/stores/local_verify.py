"""``verify`` and ``verify --fix`` for the local store (folder + SQLite ledger).

Reading: index files first, then one read transaction of the ledger, then the listing of item
files. A publish step running meanwhile can make a state look wrong for a moment (a shard is
written just after its commit; files are placed just before it), so a scan that finds such
problems is repeated a moment later and only problems seen by both scans are reported.

Fixing happens in one step under the store's write lock (``BEGIN IMMEDIATE``: publishers
wait) and its maintenance claim (no compaction): every fixable problem is re-checked against
the ledger as it is now, then orphan files are deleted, damaged index files are regenerated
from the ledger, and expired, malformed or pointless leases are deleted; the lease deletions
commit last. Deleting an orphan or regenerating an index file from the ledger is correct
whatever happens after, so a crash part-way leaves nothing a rerun cannot finish.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, StoreError
from ..fsio import pid_alive, temp_writer
from ..ledger.shard_checks import repeated_index_ids
from ..ledger.verify import Problem, StoreView, VerifyReport, find_problems
from ..publish import layout
from ..publish.files_index import is_twin_path
from ..publish.index import row_file_refs, row_from_json
from ..publish.index_fields import read_fields
from ..publish.layout_choice import MARKER_PATH, SHARDS, read_marker
from ..publish.parquet_index import row_members
from ..publish.shard_layout import INDEX_DIR, KIND_DIRS, parse_shard_path
from ..publish.tar_shard import MemberRecord, list_members
from ..records import IndexRow, Lease
from . import local_schema as sql
from .local_files_index import keep_files_index, twin_files, wanted
from .local_ledger import connect_ledger, maintenance_claim, rewrite_index_file
from .local_shards import index_files

log = logging.getLogger(__name__)

# Problems a concurrent publish step can show for a moment; reported only when seen twice.
TRANSIENT = frozenset({"orphan_file", "missing_row", "unrecorded_row", "missing_index_file",
                       "unrecorded_index_file", "missing_file", "duplicate_row", "missing_member", "index_mismatch"})
_INDEX_KINDS = frozenset({"duplicate_row", "bad_row", "unrecorded_row", "missing_row",
                          "unrecorded_index_file", "missing_index_file"})
_LEASE_KINDS = frozenset({"expired_lease", "bad_lease", "lease_on_done_unit"})
# status sums these per-publish-step counts instead of counting items, so they must be right.
_COUNT_MISMATCH_SQL = """
    SELECT s.name, s.rows, COUNT(i.id) FROM shards s LEFT JOIN items i ON i.shard = s.name
    GROUP BY s.name HAVING s.rows != COUNT(i.id) ORDER BY s.name"""


def _index_dir(root: Path, index_path: str) -> Path:
    return (root / index_path).parent


def _read_index_files(root: Path, index_path: str) -> dict[str, bytes]:
    folder = _index_dir(root, index_path)
    name = posixpath.basename(index_path)
    out = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and (path.name == name or layout.is_shard_name(index_path, path.name)):
                out[path.name] = path.read_bytes()
    return out


def _is_live_temp(name: str) -> bool:
    writer = temp_writer(name)
    return writer is not None and pid_alive(writer)


def _list_item_files(root: Path, index_path: str) -> dict[str, int]:
    """Every file outside ``.coord/``, the card, the JSONL index files and the Parquet index (``data/index``,
    checked on its own), live writers' temps skipped: a stray file beside the shards (a tar no shard name
    describes, which a reader's ``data/shards/**/*.tar`` would still read) is listed, so it shows as an orphan."""
    index_dir = posixpath.dirname(index_path)
    parquet_parent, parquet_dir = posixpath.split(INDEX_DIR)
    out: dict[str, int] = {}
    for folder, dirs, files in os.walk(root):
        rel_dir = Path(folder).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        if rel_dir == "":
            dirs[:] = [d for d in dirs if d != layout.COORD_DIR]
        if rel_dir == parquet_parent:
            dirs[:] = [d for d in dirs if d != parquet_dir]
        dirs.sort()
        for name in files:
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            if rel in (layout.README_PATH, layout.DATASETS_YAML_PATH) or _is_live_temp(name):
                continue
            if rel_dir == index_dir and (name == posixpath.basename(index_path)
                                         or layout.is_shard_name(index_path, name)):
                continue
            try:
                out[rel] = os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue  # removed while we listed
    return out


def _list_shards(root: Path) -> dict[str, int]:
    """The sharded layout's tars (``data/shards``, ``data/ply``): their rows' members are checked in them."""
    out: dict[str, int] = {}
    for folder in KIND_DIRS.values():
        for path in sorted((root / folder).rglob("*.tar")) if (root / folder).is_dir() else []:
            rel = path.relative_to(root).as_posix()
            if parse_shard_path(rel) is not None:
                out[rel] = path.stat().st_size
    return out


def _is_sharded(root: Path) -> bool:
    marker = root / MARKER_PATH
    try:
        return read_marker(marker.read_bytes()) == SHARDS
    except (FileNotFoundError, ConfigError):
        return False


def _parquet_index(root: Path) -> tuple[dict[str, dict[str, str]] | None, list[Problem]]:
    """Id → share fields of the Parquet index (None: a files-layout dataset without twins, not checked),
    and a problem per unreadable file. Read after the ledger: a publish step places its index shard
    before its ledger commit, so every committed row's file is there (an extra id of a step in flight,
    or a share being recorded, is confirmed by the second scan or not). The files layout's twins count
    with the sharded layout's files: a dataset being migrated has rows in both."""
    twins = wanted(root)
    if not _is_sharded(root) and not twins:
        return None, []
    paths = [info.path for info in index_files(root)] + (twin_files(root) if twins else [])
    ids: dict[str, dict[str, str]] = {}
    seen: Counter[str] = Counter()
    bad = []
    for path in paths:
        try:
            with (root / path).open("rb") as fh:
                # Only the sharded index counts repeats: a twin repeats what its JSONL file does (a duplicate_row)
                # and, while a migration runs, the rows the shards' index already holds.
                ids.update(read_fields(fh, seen=None if is_twin_path(path) else seen))
        except FileNotFoundError:
            continue  # merged away by a compaction meanwhile: its rows are in the merged part
        except (OSError, StoreError) as exc:
            bad.append(Problem("index_mismatch", path, str(exc)[:200], INDEX_DIR))
    return ids, bad + [Problem(*f) for f in repeated_index_ids(seen)]


def _read_ledger(conn: sqlite3.Connection, index_path: str, on_disk: set[str]) -> dict:
    index_name = posixpath.basename(index_path)
    rows: dict[str, IndexRow] = {}
    expected: dict[str, str] = {}
    with sql.read_tx(conn):
        for item_id, line, shard, state in conn.execute(
            """SELECT i.id, i.row, i.shard, s.state FROM items i JOIN shards s ON s.name = i.shard
               WHERE i.id NOT IN (SELECT item_id FROM exclusions)"""):
            rows[item_id] = row_from_json(line)
            expected[item_id] = shard if state == "committed" else index_name
        states = dict(conn.execute("SELECT name, state FROM shards"))
        leases = [Lease(*r) for r in conn.execute(
            "SELECT unit, owner, nonce, acquired_at, expires_at FROM leases ORDER BY unit")]
        done = {r[0] for r in conn.execute("SELECT unit FROM units_done")}
        counts = [Problem("shard_count", name, f"records {rows} rows, the ledger holds {actual}", name)
                  for name, rows, actual in conn.execute(_COUNT_MISMATCH_SQL)]
    known = {n for n, s in states.items() if s == "committed"}
    known |= {n for n, s in states.items() if s == "compacting" and n in on_disk}
    if index_name in on_disk or any(s != "committed" for s in states.values()):
        known.add(index_name)
    return {"rows": rows, "expected": expected, "known": known, "leases": leases, "done": done, "counts": counts}


def scan_local(root: Path, index_path: str, description: str) -> StoreView:
    """Read a local store into a ``StoreView`` (index files, ledger, then the item files and, in the
    sharded layout, the tars and the Parquet index's ids)."""
    root = Path(root)
    index_files = _read_index_files(root, index_path)
    conn = connect_ledger(root)
    try:
        ledger = _read_ledger(conn, index_path, set(index_files))
    finally:
        conn.close()
    listing = {**_list_shards(root), **_list_item_files(root, index_path)}
    parquet, unreadable = _parquet_index(root)
    return StoreView(description=description, index_files=index_files, listing=listing,
                     leases=ledger["leases"], done_units=ledger["done"], ledger_rows=ledger["rows"],
                     expected_file=ledger["expected"], known_index_files=ledger["known"],
                     ledger_problems=ledger["counts"] + unreadable,
                     parquet_ids=None if parquet is None else set(parquet), parquet_fields=parquet)


def _listing(root: Path, rel: str) -> list[MemberRecord]:
    with (root / rel).open("rb") as fh:
        return list_members(fh)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_local(root: Path, index_path: str, description: str, now: float, deep: bool = False,
                 settle_s: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> VerifyReport:
    """Check a local store.

    Problems a concurrent publish step could show for a moment are confirmed by a second scan
    ``settle_s`` seconds later; only those seen by both scans are reported.
    """
    root = Path(root)

    def check(deep_now: bool) -> VerifyReport:
        if not deep_now:  # a shard's member listing: its tar headers, one small read per member
            return find_problems(scan_local(root, index_path, description), now, lister=lambda rel: _listing(root, rel))
        return find_problems(scan_local(root, index_path, description), now, lambda rel: sha256_file(root / rel),
                             opener=lambda rel: (root / rel).open("rb"))

    first = check(False)
    if not any(p.kind in TRANSIENT for p in first.problems):
        return check(True) if deep else first
    sleep(settle_s)
    second = check(deep)
    seen = set(first.problems)
    second.problems = [p for p in second.problems if p.kind not in TRANSIENT or p in seen]
    return second


class _OrphanCheck:
    """Re-checks orphan candidates under the write lock, where the answer is final."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.in_flight = {p for row in sql.intents(conn) for p in row[:2]}
        self._all: set[str] | None = None

    def still_orphan(self, rel: str) -> bool:
        """No visible row points at ``rel`` and no publish step is staging it."""
        if rel in self.in_flight:
            return False
        parts = rel.split("/")
        if len(parts) >= 2:  # the item folder is named after the item id in every layout
            row = self.conn.execute(
                "SELECT row FROM items WHERE id = ? AND id NOT IN (SELECT item_id FROM exclusions)",
                (parts[-2],)).fetchone()
            if row and rel in _referenced(row_from_json(row[0])):
                return False
        if self._all is None:  # a shard, or an unusual layout: read every row once
            self._all = {path for (line,) in self.conn.execute(
                "SELECT row FROM items WHERE id NOT IN (SELECT item_id FROM exclusions)")
                for path in _referenced(row_from_json(line))}
        return rel not in self._all


def _referenced(row: IndexRow) -> set[str]:
    """Every path a row keeps alive: its files, its shards and the shards its members name (a row whose
    members cannot be read still keeps the shards it names)."""
    paths = {ref.path for ref in row_file_refs(row)} | {p for p in (row.shard_path, row.ply_shard_path) if p}
    try:
        paths |= {m.shard for m in row_members(row)}
    except StoreError:
        pass
    return paths


def _remove_file(root: Path, rel: str) -> None:
    path = root / rel
    path.unlink(missing_ok=True)
    parent = path.parent
    # Drop item folders left empty, never the root or the coordination folder.
    while parent != root and parent.name != layout.COORD_DIR:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def _fix_leases(conn: sqlite3.Connection, problems: list[Problem], now: float) -> list[Problem]:
    fixed = []
    done = {r[0] for r in conn.execute("SELECT unit FROM units_done")}
    for p in problems:
        lease = sql.get_lease(conn, p.target)
        if lease is None:
            continue
        still = (p.kind == "bad_lease" or (p.kind == "lease_on_done_unit" and lease.unit in done)
                 or (p.kind == "expired_lease" and lease.expired(now)))
        if still:
            conn.execute("DELETE FROM leases WHERE unit = ? AND nonce = ?", (lease.unit, lease.nonce))
            fixed.append(p)
    return fixed


def fix_local(root: Path, index_path: str, report: VerifyReport, now: float) -> list[Problem]:
    """Repair the report's fixable problems in one step under the write lock; returns those fixed."""
    root = Path(root)
    todo = [p for p in report.problems if p.fixable]
    if not todo:
        return []
    conn = connect_ledger(root)
    try:
        with maintenance_claim(conn, now), sql.write_tx(conn):
            check = _OrphanCheck(conn)
            fixed = []
            for p in todo:
                if p.kind == "orphan_file" and check.still_orphan(p.target):
                    _remove_file(root, p.target)
                    fixed.append(p)
            index_fixes = [p for p in todo if p.kind in _INDEX_KINDS]
            for name in sorted({p.target for p in index_fixes}):
                rewrite_index_file(root, index_path, conn, name)
            fixed += index_fixes
            fixed += _fix_leases(conn, [p for p in todo if p.kind in _LEASE_KINDS], now)
            for p in todo:
                if p.kind == "shard_count":
                    conn.execute("UPDATE shards SET rows = (SELECT COUNT(*) FROM items WHERE shard = ?) "
                                 "WHERE name = ?", (p.target, p.target))
                    fixed.append(p)
    finally:
        conn.close()
    keep_files_index(root, index_path)  # the twins of the index files just rewritten
    log.info("fixed %d of %d fixable problems in %s", len(fixed), len(todo), root)
    return fixed
