"""What ``push`` reads from a local store: its layout, its published rows, its done units and removals.

Read-only: the ledger is read in one read transaction (``BEGIN`` of a WAL reader sees one snapshot,
so a publisher running meanwhile cannot make the rows and the done set disagree), and the local
store is never opened (opening repairs, and could create a store in a mistyped folder). The
layout is the dataset's own: its marker, or ``files`` for a folder that predates markers and holds
rows or the predecessor's folders (``layout_choice``).

``held_for_push`` reads it under the store's maintenance claim and holds the claim until the push
is over: a ``remove`` (which rewrites tars in place), ``verify --fix`` or a compaction refuses
meanwhile, so the tars sent are the ones the rows read describe; runs go on publishing new tars
(their rows wait for the next push).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import LeaseConflict
from ..publish.index import row_from_json
from ..publish.layout_choice import FILES, MARKER_PATH, PREDECESSOR_DIR, SHARDS, read_marker
from ..records import IndexRow
from . import local_schema as sql
from .local_ledger import connect_ledger


@dataclass(frozen=True)
class LocalDataset:
    """A local store as ``push`` sees it: where it is, its layout, every visible row, its done units and
    the ids it removed (``remove``: excluded for good) with the reason given."""

    root: Path
    layout: str
    rows: tuple[IndexRow, ...]
    units_done: tuple[str, ...]
    removed: tuple[tuple[str, str], ...] = ()

    def file(self, repo_path: str) -> Path:
        """The local file at a repo path of the dataset."""
        return self.root / repo_path


def read_local_dataset(root: Path) -> LocalDataset:
    """The published rows (removed ones left out) and done units of the local store at ``root``.

    Raises ``StoreError`` when ``root`` holds no local store (no ledger) and ``ConfigError`` for a
    malformed layout marker."""
    root = Path(root)
    conn = connect_ledger(root)
    try:
        with sql.read_tx(conn):
            lines = conn.execute("""SELECT row FROM items WHERE id NOT IN (SELECT item_id FROM exclusions)
                                    ORDER BY published_at, id""").fetchall()
            units = conn.execute("SELECT unit FROM units_done ORDER BY unit").fetchall()
            removed = conn.execute("SELECT item_id, reason FROM exclusions ORDER BY item_id").fetchall()
    finally:
        conn.close()
    rows = tuple(row_from_json(line) for (line,) in lines)
    marker = root / MARKER_PATH
    if marker.is_file():
        chosen = read_marker(marker.read_bytes())
    elif rows or (root / PREDECESSOR_DIR).is_dir():
        chosen = FILES
    else:
        chosen = SHARDS  # nothing published yet: nothing to convert
    return LocalDataset(root, chosen, rows, tuple(u for (u,) in units), tuple((str(i), str(r)) for i, r in removed))


@contextmanager
def held_for_push(root: Path, now: float) -> Iterator[LocalDataset]:
    """The dataset at ``root``, read and kept as read until the block ends (see the module docstring).
    ``LeaseConflict`` when another process maintains the store now (a ``remove``, a compaction)."""
    conn = connect_ledger(Path(root))
    owner = f"push-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        holder = sql.take_maintenance(conn, owner, os.getpid(), now)
        if holder is not None:
            raise LeaseConflict(f"push: another process (pid {holder[1]}) is compacting or repairing local:{root}; "
                                "run the push again once it is done")
        try:
            yield read_local_dataset(root)
        finally:
            sql.drop_maintenance(conn, owner)
    finally:
        conn.close()
