"""``sharp-dataset status``: the whole dataset's state, from ledger aggregates only.

A store provides a ``LedgerSnapshot`` through a ``ledger_snapshot(now)`` method; the local
store's snapshot is read here, straight from its SQLite ledger, in one read transaction of
aggregate queries. No index row is parsed and no file is listed: the cost grows with the
number of clients, leases, units and publish steps (one per batch of items), not with the
number of items.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..ledger.status import (
    DAY_S,
    HOUR_S,
    ClientActivity,
    LedgerSnapshot,
    PublishEvent,
    SourceUnits,
    StatusReport,
    build_status,
    iso_epoch,
)
from ..records import Lease, Unit
from ..stores import local_schema as sql
from .local_ledger import connect_ledger

log = logging.getLogger(__name__)

UNIT_COUNT_CAP = 1_000_000  # beyond this a source is treated as unbounded for the ETA


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


def take_snapshot(store: Any, now: float) -> LedgerSnapshot:
    """The store's snapshot: its own ``ledger_snapshot(now)``, or the local ledger's aggregates.

    A local store is read without ``open()`` (status never repairs or writes anything).
    """
    method = getattr(store, "ledger_snapshot", None)
    if callable(method):
        snap = method(now)
        if not isinstance(snap, LedgerSnapshot):
            raise ConfigError(f"{store.description}: ledger_snapshot() returned {type(snap).__name__}")
        return snap
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        return local_snapshot(root, store.description, now)
    raise ConfigError(f"{store.description}: this store cannot report its status yet")


def count_units(units: Iterable[Unit], cap: int = UNIT_COUNT_CAP) -> int | None:
    """How many units a source has; ``None`` when it has more than ``cap`` (treated as unbounded)."""
    n = sum(1 for _ in itertools.islice(units, cap + 1))
    return None if n > cap else n


_RANGE_RE = re.compile(r"(p?)(\d+)-(p?)(\d+)$")


def unit_prefix(key: str) -> str:
    """The part of a unit key that names the source (``folder/<hash>`` of ``folder/<hash>/000000-000299``)."""
    return key.rsplit("/", 1)[0]


def ledger_range_size(keys: Iterable[str], prefix: str, per_page: int) -> int | None:
    """The range size the runs used on the source ``prefix``, read from the ledger's unit keys.

    A key ends in its inclusive offset range (``000010-000019``: 10 items) or, for a search, its
    page range (``p011-p020``: 10 pages of ``per_page``). A source's last unit may be cut short,
    so the largest range wins; ``None`` when the ledger has no unit of that source.
    """
    best = 0
    for key in keys:
        if unit_prefix(key) != prefix:
            continue
        match = _RANGE_RE.search(key)
        if match is None:
            continue
        span = int(match.group(4)) - int(match.group(2)) + 1
        best = max(best, span * per_page if match.group(1) == "p" else span)
    return best or None


def source_units(units: Iterable[Unit], done: Iterable[str], range_size: int,
                 cap: int = UNIT_COUNT_CAP) -> SourceUnits | None:
    """The source's units against the ledger's done set; ``None`` when it has more than ``cap``."""
    done_keys = set(done)
    total = finished = left = 0
    for unit in itertools.islice(units, cap + 1):
        total += 1
        if unit.key in done_keys:
            finished += 1
        else:
            left += max(0, unit.stop - unit.start)
    if total > cap:
        return None
    return SourceUnits(total=total, done=finished, items_left=left, range_size=range_size)


def dataset_status(store: Any, now: float, units_total: int | None = None, *,
                   source: SourceUnits | None = None) -> StatusReport:
    """Status of ``store`` at ``now``; ``source`` (or a bare ``units_total``) enables the ETA."""
    return build_status(take_snapshot(store, now), units_total, source=source)


def publish_events(store: Any) -> list[PublishEvent]:
    """Every publish step of the dataset (time, client, items): the store's own
    ``publish_events()``, or the local ledger's shard records. Empty when the store keeps none."""
    method = getattr(store, "publish_events", None)
    if callable(method):
        return list(method())
    root = getattr(store, "root", None)
    if not isinstance(root, Path):
        return []
    conn = connect_ledger(root)
    try:
        return [PublishEvent(float(t), str(c), int(n)) for t, c, n in conn.execute(
            "SELECT committed_at, client, rows FROM shards WHERE rows > 0 ORDER BY committed_at")]
    finally:
        conn.close()
