"""The local store's SQLite ledger: schema, connections, transactions and the SQL it runs.

Several processes on one machine share one ledger file. WAL lets readers run beside the one
writer; every write is a ``BEGIN IMMEDIATE`` transaction (the write lock is taken up front,
so a read-then-write decision such as a lease acquisition is a compare-and-swap), and
``busy_timeout`` makes a second writer wait instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..errors import StoreError
from ..fsio import pid_alive
from ..records import Failure, Followup, ItemState, Lease

SCHEMA_VERSION = 1
MAINTENANCE = "maintenance"  # the name of the one maintenance claim
CHUNK = 500  # ids per IN (...) query: well under SQLite's host-parameter limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, unit TEXT NOT NULL, source TEXT NOT NULL, row TEXT NOT NULL, shard TEXT NOT NULL,
    published_at REAL NOT NULL, client TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_by_shard ON items(shard);
CREATE INDEX IF NOT EXISTS items_by_time ON items(published_at, id);
CREATE TABLE IF NOT EXISTS leases (
    unit TEXT PRIMARY KEY, owner TEXT NOT NULL, nonce TEXT NOT NULL,
    acquired_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS units_done (
    unit TEXT PRIMARY KEY, done_at REAL NOT NULL, client TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    item_id TEXT NOT NULL, unit TEXT NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL, transient INTEGER NOT NULL, attempts INTEGER NOT NULL,
    transient_attempts INTEGER NOT NULL, last_at REAL NOT NULL, client TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '', PRIMARY KEY (item_id, unit));
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('committed', 'compacting', 'compacted')),
    rows INTEGER NOT NULL, committed_at REAL NOT NULL, client TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS followups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, item_id TEXT NOT NULL,
    payload TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
    client TEXT NOT NULL DEFAULT '', UNIQUE (kind, item_id, payload));
CREATE TABLE IF NOT EXISTS exclusions (
    item_id TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS intents (
    tmp TEXT PRIMARY KEY, final TEXT NOT NULL, item_id TEXT NOT NULL, pid INTEGER NOT NULL,
    at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS items_by_unit ON items(unit);
CREATE TABLE IF NOT EXISTS rewrites (
    shard TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS maintenance (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL);
"""

T = TypeVar("T")


@dataclass
class StoreCounts:
    """Cheap ledger totals for ``status`` / ``verify``."""

    published: int = 0
    excluded: int = 0
    units_done: int = 0
    leases: int = 0
    shards_pending: int = 0
    followups_pending: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason → items not published


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` values."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(n: int) -> str:
    """``?,?,...`` for an IN clause of ``n`` values."""
    return ",".join("?" * n)


def connect(path: Path, busy_timeout_s: float = 60.0) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, full sync."""
    try:
        conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _use_wal(conn, busy_timeout_s)
        # FULL: a transaction that returned is on disk, so "done" survives a power cut.
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open ledger {path}: {exc}") from exc
    return conn


def _use_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> None:
    """Switch to WAL (persistent once set). Changing the journal mode takes an exclusive lock and
    SQLite answers "database is locked" at once, without its busy handler, while another process
    is opening the same new ledger: retry until the timeout."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables if missing, add newer columns; refuse a ledger written by a newer version."""
    with write_tx(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"ledger schema {version} is newer than this program's {SCHEMA_VERSION}")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        _add_missing_columns(conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


# Columns added after a table first shipped: (table, column, declaration). Added with a default, so
# a ledger written before them stays readable and older programs can still write to a newer one.
# The optional fourth entry fills the new column of existing rows.
_ADDED_COLUMNS = (
    ("failures", "source", "TEXT NOT NULL DEFAULT ''"),
    ("leases", "pid", "INTEGER NOT NULL DEFAULT 0"),
    ("leases", "host", "TEXT NOT NULL DEFAULT ''"),
    ("items", "predictor", "TEXT NOT NULL DEFAULT ''",
     "UPDATE items SET predictor = COALESCE(json_extract(row, '$.predictor'), '')"),
    ("items", "model_version", "TEXT NOT NULL DEFAULT ''",
     "UPDATE items SET model_version = COALESCE(json_extract(row, '$.model_version'), '')"),
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, declaration, *backfill in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            for statement in backfill:
                conn.execute(statement)


@contextmanager
def write_tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: the write lock is taken at BEGIN, released at COMMIT/ROLLBACK."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"ledger is busy or unwritable: {exc}") from exc
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.execute("ROLLBACK")
        raise StoreError(f"ledger commit failed: {exc}") from exc


@contextmanager
def read_tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read snapshot: every query inside sees the same committed state."""
    conn.execute("BEGIN DEFERRED")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def get_lease(conn: sqlite3.Connection, unit: str) -> Lease | None:
    row = conn.execute(
        "SELECT unit, owner, nonce, acquired_at, expires_at FROM leases WHERE unit = ?", (unit,)
    ).fetchone()
    return Lease(*row) if row else None


def lease_holder(conn: sqlite3.Connection, unit: str) -> tuple[int, str]:
    """(pid, host) of the process that took or last renewed the lease of ``unit`` ((0, "") if unknown)."""
    row = conn.execute("SELECT pid, host FROM leases WHERE unit = ?", (unit,)).fetchone()
    return (int(row[0]), str(row[1])) if row else (0, "")


def put_lease(conn: sqlite3.Connection, lease: Lease, pid: int = 0, host: str = "") -> None:
    conn.execute(
        "INSERT OR REPLACE INTO leases (unit, owner, nonce, acquired_at, expires_at, pid, host) "
        "VALUES (?,?,?,?,?,?,?)",
        (lease.unit, lease.owner, lease.nonce, lease.acquired_at, lease.expires_at, pid, host),
    )


def renew_leases(conn: sqlite3.Connection, units: Iterable[str], owner: str, expires_at: float,
                 pid: int = 0, host: str = "") -> int:
    """Extend the caller's own leases (never shorten them); returns how many were touched.

    The renewing process (``pid`` on ``host``) becomes the one whose death frees the lease."""
    touched = 0
    for part in chunks(sorted(set(units))):
        cur = conn.execute(
            "UPDATE leases SET expires_at = MAX(expires_at, ?), "
            "pid = CASE WHEN ? > 0 THEN ? ELSE pid END, host = CASE WHEN ? > 0 THEN ? ELSE host END "
            f"WHERE owner = ? AND unit IN ({marks(len(part))})",
            (expires_at, pid, pid, pid, host, owner, *part),
        )
        touched += cur.rowcount
    return touched


def delete_leases(conn: sqlite3.Connection, units: Iterable[str], owner: str) -> None:
    for part in chunks(sorted(set(units))):
        conn.execute(f"DELETE FROM leases WHERE owner = ? AND unit IN ({marks(len(part))})", (owner, *part))


def mark_units_done(conn: sqlite3.Connection, units: Iterable[str], client: str, now: float) -> None:
    for unit in sorted(set(units)):
        conn.execute("INSERT OR IGNORE INTO units_done (unit, done_at, client) VALUES (?,?,?)",
                     (unit, now, client))
    delete_leases(conn, units, client)


def upsert_failures(conn: sqlite3.Connection, failures: Iterable[Failure], client: str, now: float) -> None:
    """One row per (item, unit): the latest failure's text, a count of attempts.

    Permanent is sticky: once a permanent failure is recorded, a later transient one does not
    make the item retryable again.
    """
    for f in failures:
        transient = 1 if f.transient else 0
        conn.execute(
            """INSERT INTO failures (item_id, unit, stage, reason, detail, transient, attempts,
                                     transient_attempts, last_at, client, source)
               VALUES (?,?,?,?,?,?,1,?,?,?,?)
               ON CONFLICT (item_id, unit) DO UPDATE SET
                 stage = excluded.stage, reason = excluded.reason, detail = excluded.detail,
                 source = CASE WHEN excluded.source != '' THEN excluded.source ELSE failures.source END,
                 transient = MIN(failures.transient, excluded.transient),
                 attempts = failures.attempts + 1,
                 transient_attempts = failures.transient_attempts + excluded.transient_attempts,
                 last_at = excluded.last_at, client = excluded.client""",
            (f.item_id, f.unit, f.stage, f.reason, f.detail, transient, transient, now, client, f.source),
        )


def add_followups(conn: sqlite3.Connection, followups: Iterable[Followup], now: float, client: str = "") -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO followups (kind, item_id, payload, done, created_at, client) VALUES (?,?,?,0,?,?)",
        [(f.kind, f.item_id, f.payload, now, client) for f in followups],
    )


def finish_followups(conn: sqlite3.Connection, done: Iterable[Followup]) -> None:
    conn.executemany(
        "UPDATE followups SET done = 1 WHERE kind = ? AND item_id = ? AND payload = ?",
        [(f.kind, f.item_id, f.payload) for f in done],
    )


def unavailable_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """Ids that a publish must skip: already published, or excluded (removal requested)."""
    found: set[str] = set()
    for part in chunks(ids):
        q = marks(len(part))
        found.update(r[0] for r in conn.execute(f"SELECT id FROM items WHERE id IN ({q})", part))
        found.update(r[0] for r in conn.execute(
            f"SELECT item_id FROM exclusions WHERE item_id IN ({q})", part))
    return found


def excluded_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    """Ids with a removal request: never published again."""
    found: set[str] = set()
    for part in chunks(ids):
        found.update(r[0] for r in conn.execute(
            f"SELECT item_id FROM exclusions WHERE item_id IN ({marks(len(part))})", part))
    return found


def published_models(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """id -> (predictor, model version) of each published id."""
    found: dict[str, tuple[str, str]] = {}
    for part in chunks(ids):
        for i, predictor, model in conn.execute(
                f"SELECT id, predictor, model_version FROM items WHERE id IN ({marks(len(part))})", part):
            found[i] = (predictor, model)
    return found


def published_rows(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """id -> (shard, row json) of each published id."""
    found: dict[str, tuple[str, str]] = {}
    for part in chunks(ids):
        for i, shard, row in conn.execute(
                f"SELECT id, shard, row FROM items WHERE id IN ({marks(len(part))})", part):
            found[i] = (shard, row)
    return found


def note_rewrites(conn: sqlite3.Connection, shards: Sequence[str]) -> None:
    """Journal index files that still show rows replaced by a newer publish (rewritten after it)."""
    conn.executemany("INSERT OR IGNORE INTO rewrites (shard) VALUES (?)", [(name,) for name in shards])


def pending_rewrites(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT shard FROM rewrites ORDER BY shard")]


def drop_rewrites(conn: sqlite3.Connection, shards: Sequence[str]) -> None:
    conn.executemany("DELETE FROM rewrites WHERE shard = ?", [(name,) for name in shards])


def shard_state(conn: sqlite3.Connection, shard: str) -> str:
    row = conn.execute("SELECT state FROM shards WHERE name = ?", (shard,)).fetchone()
    return str(row[0]) if row else ""


def unit_contents(conn: sqlite3.Connection, units: Sequence[str]) -> tuple[dict, dict]:
    """Per unit: {(predictor, model version): published items}, and unpublished failed items."""
    models: dict[str, dict[tuple[str, str], int]] = {}
    failed: dict[str, int] = {}
    q = marks(len(units))
    for unit, predictor, model, n in conn.execute(
            f"""SELECT unit, predictor, model_version, COUNT(*) FROM items WHERE unit IN ({q})
                GROUP BY unit, predictor, model_version""", tuple(units)):
        models.setdefault(unit, {})[(predictor, model)] = int(n)
    for unit, n in conn.execute(
            f"""SELECT unit, COUNT(DISTINCT item_id) FROM failures WHERE unit IN ({q})
                AND item_id NOT IN (SELECT id FROM items) GROUP BY unit""", tuple(units)):
        failed[unit] = int(n)
    return models, failed


def shard_lines(conn: sqlite3.Connection, shard: str) -> list[str]:
    """The rows of one shard, as written into its file (excluded items left out)."""
    return [r[0] for r in conn.execute(
        """SELECT row FROM items WHERE shard = ?
           AND id NOT IN (SELECT item_id FROM exclusions) ORDER BY id""", (shard,))]


def shards_in(conn: sqlite3.Connection, *states: str) -> list[str]:
    return [r[0] for r in conn.execute(
        f"SELECT name FROM shards WHERE state IN ({marks(len(states))}) ORDER BY name", states)]


def set_shard_state(conn: sqlite3.Connection, names: Sequence[str], state: str) -> None:
    for part in chunks(names):
        conn.execute(f"UPDATE shards SET state = ? WHERE name IN ({marks(len(part))})", (state, *part))


def replaced_shards(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    """id -> shard of the published row for each of ``ids`` that has one."""
    found: dict[str, str] = {}
    for part in chunks(ids):
        found.update(conn.execute(f"SELECT id, shard FROM items WHERE id IN ({marks(len(part))})", part))
    return found


def insert_items(conn: sqlite3.Connection, rows: list[tuple], shard: str, client: str, now: float) -> None:
    """``rows``: (id, unit, source, row json, shard, published_at, client, predictor, model_version),
    all of one new shard. A published row of the same id is replaced (``--redo``), and failures
    recorded for these ids before are cleared: the item is published now."""
    ids = [r[0] for r in rows]
    for item_id, old in replaced_shards(conn, ids).items():
        conn.execute("DELETE FROM items WHERE id = ?", (item_id,))
        conn.execute("UPDATE shards SET rows = rows - 1 WHERE name = ?", (old,))
    for part in chunks(ids):
        conn.execute(f"DELETE FROM failures WHERE item_id IN ({marks(len(part))})", tuple(part))
    conn.executemany(
        "INSERT INTO items (id, unit, source, row, shard, published_at, client, predictor, model_version) "
        "VALUES (?,?,?,?,?,?,?,?,?)", rows)
    if rows:
        conn.execute("INSERT INTO shards (name, state, rows, committed_at, client) VALUES (?,?,?,?,?)",
                     (shard, "committed", len(rows), now, client))


def leases_of(conn: sqlite3.Connection, units: Sequence[str]) -> list[Lease]:
    rows = conn.execute(
        "SELECT unit, owner, nonce, acquired_at, expires_at FROM leases "
        f"WHERE unit IN ({marks(len(units))})", tuple(units))
    return [Lease(*row) for row in rows]


def take_maintenance(conn: sqlite3.Connection, owner: str, pid: int, now: float) -> tuple[str, int] | None:
    """The store's one maintenance claim (compaction, crash repair, index rewrites, ``remove`` and
    ``verify --fix``), in its own write transaction. Returns None when ``owner`` holds it now, else
    the (owner, pid) of the live process holding it; a dead holder's claim is void."""
    with write_tx(conn):
        row = conn.execute("SELECT owner, pid FROM maintenance WHERE name = ?", (MAINTENANCE,)).fetchone()
        if row is not None and row[0] != owner and pid_alive(int(row[1])):
            return str(row[0]), int(row[1])
        conn.execute("INSERT OR REPLACE INTO maintenance (name, owner, pid, at) VALUES (?,?,?,?)",
                     (MAINTENANCE, owner, pid, now))
    return None


def drop_maintenance(conn: sqlite3.Connection, owner: str) -> None:
    with write_tx(conn):
        conn.execute("DELETE FROM maintenance WHERE name = ? AND owner = ?", (MAINTENANCE, owner))


def compacted_rows(conn: sqlite3.Connection) -> Iterator[str]:
    """The rows of the compacted index, in its order: every row of a compacting or compacted shard,
    excluded ids left out, by publish time then id."""
    for (line,) in conn.execute(
            """SELECT i.row FROM items i JOIN shards s ON s.name = i.shard
               WHERE s.state IN ('compacting', 'compacted') AND i.id NOT IN (SELECT item_id FROM exclusions)
               ORDER BY i.published_at, i.id"""):
        yield line


def add_exclusions(conn: sqlite3.Connection, ids: Iterable[str], reason: str, now: float) -> None:
    """Exclude ids for good; an id excluded before keeps its first reason and time."""
    conn.executemany("INSERT OR IGNORE INTO exclusions (item_id, reason, at) VALUES (?,?,?)",
                     [(i, reason, now) for i in sorted(set(ids))])


def add_intents(conn: sqlite3.Connection, rows: list[tuple[str, str, str, int, float]]) -> None:
    """Journal staged files: (tmp, final, item id, pid, at), paths relative to the store root."""
    conn.executemany("INSERT INTO intents (tmp, final, item_id, pid, at) VALUES (?,?,?,?,?)", rows)


def drop_intents(conn: sqlite3.Connection, tmps: Sequence[str]) -> None:
    for part in chunks(tmps):
        conn.execute(f"DELETE FROM intents WHERE tmp IN ({marks(len(part))})", tuple(part))


def intents(conn: sqlite3.Connection, tmps: Sequence[str] | None = None) -> list[tuple[str, str, str, int]]:
    """Journaled staging entries (all of them, or those with the given temp paths)."""
    query = "SELECT tmp, final, item_id, pid FROM intents"
    if tmps is None:
        return list(conn.execute(query + " ORDER BY tmp"))
    found: list[tuple[str, str, str, int]] = []
    for part in chunks(tmps):
        found += conn.execute(f"{query} WHERE tmp IN ({marks(len(part))})", tuple(part)).fetchall()
    return found


def item_states(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, ItemState]:
    """States of the ids the ledger knows (published, excluded, failures); published wins."""
    found: dict[str, dict] = {}
    for part in chunks(ids):
        q = marks(len(part))
        for i, predictor, model in conn.execute(
                f"SELECT id, predictor, model_version FROM items WHERE id IN ({q})", part):
            found.setdefault(i, {}).update(published=True, predictor=predictor, model_version=model)
        for (i,) in conn.execute(f"SELECT item_id FROM exclusions WHERE item_id IN ({q})", part):
            found.setdefault(i, {})["excluded"] = True
        for i, transient, t_attempts in conn.execute(
            f"""SELECT item_id, MIN(transient), SUM(transient_attempts) FROM failures
                WHERE item_id IN ({q}) GROUP BY item_id""", part):
            state = found.setdefault(i, {})
            if not state.get("published"):
                state["failed_permanently"] = transient == 0
                state["transient_failures"] = int(t_attempts)
    return {i: ItemState(**state) for i, state in found.items()}


def totals(conn: sqlite3.Connection) -> StoreCounts:
    def one(query: str) -> int:
        return int(conn.execute(query).fetchone()[0])

    return StoreCounts(
        published=one("SELECT COUNT(*) FROM items"),
        excluded=one("SELECT COUNT(*) FROM exclusions"),
        units_done=one("SELECT COUNT(*) FROM units_done"),
        leases=one("SELECT COUNT(*) FROM leases"),
        shards_pending=one("SELECT COUNT(*) FROM shards WHERE state != 'compacted'"),
        followups_pending=one("SELECT COUNT(*) FROM followups WHERE done = 0"),
        failed=dict(conn.execute(
            """SELECT reason, COUNT(DISTINCT item_id) FROM failures
               WHERE item_id NOT IN (SELECT id FROM items) GROUP BY reason ORDER BY reason""")),
    )
