"""Direct access to a local store's ledger for the maintenance commands.

The maintenance commands read the SQLite ledger (``.coord/ledger.sqlite3``) with the local
store's own schema helpers and follow the store's locking protocol:
- every change is one ``BEGIN IMMEDIATE`` transaction, which also blocks publishers, so no
  publish step can place or record files while a repair decides what to touch;
- index files are rewritten only under the store's ``maintenance`` claim (the one compaction
  and crash repair take), so a compaction never races a rewrite.
The ledger is the authority: index files are always regenerated from it, never edited.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import LeaseConflict, StoreError
from ..fsio import atomic_write
from ..publish import layout
from . import local_schema as sql


def ledger_file(root: Path) -> Path:
    return Path(root) / layout.ledger_path()


def existing_ledger(root: Path) -> Path:
    """The ledger of the store at ``root``; ``StoreError`` when there is none (a wrong path)."""
    path = ledger_file(root)
    if not path.is_file():
        raise StoreError(f"no local store at {root}: {layout.ledger_path()} is missing")
    return path


def connect_ledger(root: Path, busy_timeout_s: float = 60.0) -> sqlite3.Connection:
    """A connection to an existing ledger (never creates one: a wrong path is an error)."""
    path = existing_ledger(root)
    conn = sql.connect(path, busy_timeout_s)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot read the ledger of {root}: {exc}") from exc
    if version < 1:  # a store still being created by its first open()
        conn.close()
        raise StoreError(f"the ledger of {root} is not initialised yet")
    return conn


@contextmanager
def maintenance_claim(conn: sqlite3.Connection, now: float) -> Iterator[str]:
    """Hold the store's maintenance claim (no compaction or repair runs meanwhile)."""
    owner = f"ops-{os.getpid()}-{secrets.token_hex(4)}"
    holder = sql.take_maintenance(conn, owner, os.getpid(), now)
    if holder is not None:
        raise LeaseConflict(f"another process (pid {holder[1]}) is compacting or repairing this store")
    try:
        yield owner
    finally:
        sql.drop_maintenance(conn, owner)


def expected_index_lines(conn: sqlite3.Connection, index_path: str, name: str) -> list[str] | None:
    """What the ledger says index file ``name`` (in the index folder) must contain.

    The compacted index holds the rows of compacted shards; a committed shard file holds its
    own rows; ``None`` for a name the ledger does not know (a file that should not exist).
    """
    if name == Path(index_path).name:
        return list(sql.compacted_rows(conn))
    state = conn.execute("SELECT state FROM shards WHERE name = ?", (name,)).fetchone()
    if state is None or state[0] != "committed":
        return None
    return sql.shard_lines(conn, name)


def rewrite_index_file(root: Path, index_path: str, conn: sqlite3.Connection, name: str) -> bool:
    """Regenerate one index file from the ledger (or delete it if the ledger has no such file).

    Call inside a transaction on ``conn`` and under the maintenance claim. Returns True when
    the file on disk changed.
    """
    path = (Path(root) / index_path).parent / name
    lines = expected_index_lines(conn, index_path, name)
    if lines is None:
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, data)
    return True
