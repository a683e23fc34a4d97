"""What ``push`` reads from a local store: its layout, its published rows, done units, removals and failures.

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import LeaseConflict, StoreError
from ..ledger.status import FailedItem
from ..publish.index import row_from_json
from ..publish.layout_choice import FILES, MARKER_PATH, PREDECESSOR_DIR, SHARDS, read_marker
from ..publish.transfer_plan import RowRef, row_ref
from ..records import IndexRow
from . import local_schema as sql
from .local_ledger import connect_ledger

_ROWS_PER_QUERY = 500  # ids per ``IN (...)`` query: well under SQLite's bound on parameters


@dataclass(frozen=True)
class LocalDataset:
    """A local store as ``push`` sees it: where it is, its layout, every visible row (as a ``RowRef``;
    ``rows_of`` reads the full rows), its done units, the ids it removed (``remove``: excluded for
    good) with the reason given, and the failure records of the ids it never published."""

    root: Path
    layout: str
    refs: tuple[RowRef, ...]
    units_done: tuple[str, ...]
    removed: tuple[tuple[str, str], ...] = ()
    failures: tuple[FailedItem, ...] = ()  # one per (id, unit) of the ids never published and not removed

    def file(self, repo_path: str) -> Path:
        """The local file at a repo path of the dataset."""
        return self.root / repo_path

    def rows_of(self, ids: Sequence[str]) -> list[IndexRow]:
        """The full rows of ``ids``, in that order. ``StoreError`` for an id the store no longer has
        (under ``held_for_push`` no removal can run, so that means the store was changed by hand)."""
        found: dict[str, IndexRow] = {}
        conn = connect_ledger(self.root)
        try:
            with sql.read_tx(conn):
                for i in range(0, len(ids), _ROWS_PER_QUERY):
                    part = list(ids[i:i + _ROWS_PER_QUERY])
                    marks = ",".join("?" * len(part))
                    for item_id, line in conn.execute(f"SELECT id, row FROM items WHERE id IN ({marks})", part):
                        found[str(item_id)] = row_from_json(line)
        finally:
            conn.close()
        missing = [i for i in ids if i not in found]
        if missing:
            raise StoreError(f"push: local:{self.root} no longer has {len(missing)} of the rows being pushed "
                             f"(first: {missing[0]}); run `sharp-dataset verify --store local:{self.root}`")
        return [found[i] for i in ids]


def read_local_dataset(root: Path) -> LocalDataset:
    """The published rows (removed ones left out, as refs) and done units of the local store at ``root``.

    Raises ``StoreError`` when ``root`` holds no local store (no ledger) and ``ConfigError`` for a
    malformed layout marker."""
    root = Path(root)
    conn = connect_ledger(root)
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    try:
        with sql.read_tx(conn):
            # One row at a time off the cursor: only its ref is kept.
            refs = tuple(row_ref(row_from_json(line), shared) for (line,) in conn.execute(
                """SELECT row FROM items WHERE id NOT IN (SELECT item_id FROM exclusions)
                   ORDER BY published_at, id"""))
            units = conn.execute("SELECT unit FROM units_done ORDER BY unit").fetchall()
            removed = conn.execute("SELECT item_id, reason FROM exclusions ORDER BY item_id").fetchall()
            failures = tuple(_failure(*r) for r in conn.execute(
                """SELECT item_id, source, unit, stage, reason, detail, transient, attempts, transient_attempts,
                          last_at, client FROM failures
                   WHERE item_id NOT IN (SELECT id FROM items) AND item_id NOT IN (SELECT item_id FROM exclusions)
                   ORDER BY item_id, last_at"""))
    finally:
        conn.close()
    marker = root / MARKER_PATH
    if marker.is_file():
        chosen = read_marker(marker.read_bytes())
    elif refs or (root / PREDECESSOR_DIR).is_dir():
        chosen = FILES
    else:
        chosen = SHARDS  # nothing published yet: nothing to convert
    return LocalDataset(root, chosen, refs, tuple(u for (u,) in units), tuple((str(i), str(r)) for i, r in removed),
                        failures)


def _failure(item_id: str, source: str, unit: str, stage: str, reason: str, detail: str, transient: int,
             attempts: int, transient_attempts: int, last_at: float, client: str) -> FailedItem:
    """One ledger failure record as it is carried: a transient one counts its transient attempts
    (what a run's attempt limit reads), a permanent one all of them."""
    count = int(transient_attempts) if transient else int(attempts)
    return FailedItem(item_id=str(item_id), source=str(source or ""), unit=str(unit), stage=str(stage),
                      reason=str(reason), detail=str(detail), transient=bool(transient), attempts=max(1, count),
                      last_at=float(last_at), client=str(client))


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
