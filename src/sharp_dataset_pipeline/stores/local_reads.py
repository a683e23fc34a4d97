"""Reads of a local store's ledger for ``status``, ``failures`` and the gallery: aggregates in one read
transaction each. No index row is parsed and no file is listed for ``status``: its cost grows with
the number of clients, leases, units and publish steps (one per batch of items), not with the
number of items.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..ledger.status import DAY_S, HOUR_S, ClientActivity, FailedItem, LedgerSnapshot, PublishEvent, iso_epoch
from ..records import Lease
from . import local_schema as sql
from .local_ledger import connect_ledger


def _client_activity(conn: Any, now: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for client, total, hour, day, last in conn.execute(
        """SELECT client, SUM(rows), SUM(CASE WHEN committed_at >= ? THEN rows ELSE 0 END),
                  SUM(CASE WHEN committed_at >= ? THEN rows ELSE 0 END), MAX(committed_at)
           FROM shards GROUP BY client""", (now - HOUR_S, now - DAY_S)):
        out[client] = {"published": int(total or 0), "published_last_hour": int(hour or 0),
                       "published_last_day": int(day or 0), "last_publish_at": last}
    for client, done in conn.execute("SELECT client, COUNT(*) FROM units_done GROUP BY client"):
        out.setdefault(client, {})["units_done"] = int(done)
    for key, window in (("first_item_last_hour", HOUR_S), ("first_item_last_day", DAY_S)):
        for client, first in _first_items(conn, now - window).items():
            out.setdefault(client, {})[key] = first
    return out


def _first_items(conn: Any, since: float) -> dict[str, float]:
    """Per client, when the earliest item of its first publish step since ``since`` was made: one
    lookup of a step's rows per client (the shard index), never a scan of the items."""
    out: dict[str, float] = {}
    # SQLite gives the bare ``name`` of the row holding MIN(committed_at).
    for client, shard, _ in conn.execute(
            "SELECT client, name, MIN(committed_at) FROM shards WHERE committed_at >= ? AND rows > 0 GROUP BY client",
            (since,)).fetchall():
        (first,) = conn.execute("SELECT MIN(json_extract(row, '$.processed_at')) FROM items WHERE shard = ?",
                                (shard,)).fetchone()
        when = iso_epoch(first) if isinstance(first, str) else None
        if when is not None:
            out[str(client)] = when
    return out


def local_snapshot(root: Path, description: str, now: float) -> LedgerSnapshot:
    """Aggregates of a local store's ledger at ``now`` (one read transaction)."""
    conn = connect_ledger(root)
    try:
        with sql.read_tx(conn):
            def one(query: str, *args: Any) -> int:
                return int(conn.execute(query, args).fetchone()[0] or 0)

            # Rows per publish step, not a count of the items table: O(publish steps), not O(rows).
            # ``verify`` checks that these counts match the items table.
            items = one("SELECT SUM(rows) FROM shards")
            hidden = one("SELECT COUNT(*) FROM exclusions e JOIN items i ON i.id = e.item_id")
            done, done_hour, done_day = conn.execute(
                """SELECT COUNT(*), SUM(CASE WHEN done_at >= ? THEN 1 ELSE 0 END),
                          SUM(CASE WHEN done_at >= ? THEN 1 ELSE 0 END) FROM units_done""",
                (now - HOUR_S, now - DAY_S)).fetchone()
            failed = dict(conn.execute(
                """SELECT reason, COUNT(DISTINCT item_id) FROM failures
                   WHERE item_id NOT IN (SELECT id FROM items) GROUP BY reason ORDER BY reason"""))
            leases = tuple(Lease(*row) for row in conn.execute(
                "SELECT unit, owner, nonce, acquired_at, expires_at FROM leases ORDER BY unit"))
            activity = _client_activity(conn, now)
            return LedgerSnapshot(
                store=description,
                taken_at=now,
                published=items - hidden,
                excluded=one("SELECT COUNT(*) FROM exclusions"),
                failed={str(k): int(v) for k, v in failed.items()},
                units_done=int(done or 0),
                units_done_last_hour=int(done_hour or 0),
                units_done_last_day=int(done_day or 0),
                leases=leases,
                clients=tuple(ClientActivity(client=c, **a) for c, a in sorted(activity.items())),
                shards_pending=one("SELECT COUNT(*) FROM shards WHERE state != 'compacted'"),
                done_unit_keys=tuple(r[0] for r in conn.execute("SELECT unit FROM units_done ORDER BY unit")),
            )
    finally:
        conn.close()


def local_failed_items(root: Path) -> list[FailedItem]:
    """Items of a local store that failed and were never published (removed ones left out); an
    item that failed in several units appears once, with its latest failure and all its attempts."""
    conn = connect_ledger(root)
    try:
        with sql.read_tx(conn):
            rows = conn.execute(
                """SELECT item_id, source, unit, stage, reason, detail, transient, attempts, last_at, client
                   FROM failures
                   WHERE item_id NOT IN (SELECT id FROM items) AND item_id NOT IN (SELECT item_id FROM exclusions)
                   ORDER BY item_id, last_at""").fetchall()
    finally:
        conn.close()
    out: dict[str, FailedItem] = {}
    for item_id, source, unit, stage, reason, detail, transient, attempts, last_at, client in rows:
        old = out.get(item_id)
        out[item_id] = FailedItem(item_id=str(item_id), source=str(source or (old.source if old else "")),
                                  unit=str(unit), stage=str(stage), reason=str(reason), detail=str(detail),
                                  transient=bool(transient), attempts=int(attempts) + (old.attempts if old else 0),
                                  last_at=float(last_at), client=str(client))
    return list(out.values())


def local_publish_events(root: Path) -> list[PublishEvent]:
    """Every publish step of the dataset (time, client, items), from the ledger's shard records."""
    conn = connect_ledger(root)
    try:
        return [PublishEvent(float(t), str(c), int(n)) for t, c, n in conn.execute(
            "SELECT committed_at, client, rows FROM shards WHERE rows > 0 ORDER BY committed_at")]
    finally:
        conn.close()
