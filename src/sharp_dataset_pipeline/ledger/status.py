"""Ledger snapshot → status report: per-client table, publish rates, ETA. Pure: time is passed in.

A store turns its ledger into a ``LedgerSnapshot`` from aggregates only (counts, sums per
client, the lease rows), so the cost of ``status`` grows with the number of clients, leases
and publish steps, never with the number of index rows. Everything here works on that
snapshot: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..records import Lease

HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True)
class PublishEvent:
    """One publish step: when, by which client, how many items (the report's time series)."""

    t: float
    client: str
    items: int


@dataclass(frozen=True)
class ClientActivity:
    """What one client published, from the store's publish steps (one entry per client)."""

    client: str
    published: int = 0
    published_last_hour: int = 0
    published_last_day: int = 0
    units_done: int = 0
    last_publish_at: float | None = None
    # When the earliest item published in the window was made (epoch s, from its ``processed_at``):
    # the start of the client's actual window, so a run 3 minutes old is rated over 3 minutes.
    first_item_last_hour: float | None = None
    first_item_last_day: float | None = None


@dataclass(frozen=True)
class SourceUnits:
    """The configured source as the ledger sees it: its units (cut with the range size the runs
    used, read from the ledger's unit keys), how many of them are done, and the items left in the
    units not done (an upper bound: a partly published unit counts whole)."""

    total: int
    done: int
    items_left: int
    range_size: int


@dataclass(frozen=True)
class LedgerSnapshot:
    """Aggregates a store reads from its ledger at ``taken_at`` (the store's clock).

    ``published`` counts visible items (removed ones excluded); ``failed`` maps a failure
    reason to the number of items that failed for it and were never published; ``leases``
    are every lease row, expired ones included; ``budgets`` holds store-specific usage
    figures (the hub's commits in the last hour, API calls in the last 5 minutes).
    """

    store: str
    taken_at: float
    published: int = 0
    excluded: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    units_done: int = 0
    units_done_last_hour: int = 0
    units_done_last_day: int = 0
    leases: tuple[Lease, ...] = ()
    clients: tuple[ClientActivity, ...] = ()
    shards_pending: int = 0
    budgets: dict[str, float | int] = field(default_factory=dict)
    done_unit_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class FailedItem:
    """One item that failed and was never published, as ``sharp-dataset failures`` lists it.

    ``source`` is the input it came from (a folder-relative path, or a URL without credentials);
    ``attempts`` counts the runs that tried it; ``last_at`` is when the last failure was recorded
    (epoch s; ``None`` when an older ledger did not keep it).
    """

    item_id: str
    source: str
    unit: str
    stage: str
    reason: str
    detail: str
    transient: bool
    attempts: int
    last_at: float | None
    client: str


@dataclass(frozen=True)
class LeaseRow:
    unit: str
    owner: str
    age_s: float
    expires_in_s: float
    expired: bool


@dataclass(frozen=True)
class ClientRow:
    """One line of the per-client table. Rates are items per hour."""

    client: str
    leases_active: int
    leases_expired: int
    published: int
    units_done: int
    rate_last_hour: float
    rate_last_day: float
    last_publish_ago_s: float | None
    window_last_hour_s: float = 0.0
    window_last_day_s: float = 0.0


@dataclass(frozen=True)
class StatusReport:
    store: str
    taken_at: float
    published: int
    excluded: int
    failed: dict[str, int]
    failed_total: int
    units_total: int | None
    units_done: int
    units_leased: int
    units_expired_leases: int
    units_free: int | None
    rate_last_hour: float
    rate_last_day: float
    eta_s: float | None
    eta_basis: str
    clients: tuple[ClientRow, ...]
    leases: tuple[LeaseRow, ...]
    shards_pending: int
    budgets: dict[str, float | int]
    window_last_hour_s: float = 0.0
    window_last_day_s: float = 0.0
    items_left: int | None = None
    range_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stable keys; ``None`` where a value is unknown)."""
        return asdict(self)


def eta_seconds(units_left: int | None, done_last_hour: int, done_last_day: int) -> tuple[float | None, str]:
    """Seconds until ``units_left`` units are done at the recent unit rate, and which rate was used.

    The last hour's rate is preferred (it follows the current fleet); when nothing finished in
    the last hour the last day's average is used; with no recent progress the ETA is unknown.
    """
    if units_left is None:
        return None, "source size unknown"
    if units_left <= 0:
        return 0.0, "complete"
    if done_last_hour > 0:
        return units_left * HOUR_S / done_last_hour, "units done in the last hour"
    if done_last_day > 0:
        return units_left * DAY_S / done_last_day, "units done in the last day"
    return None, "no unit finished in the last day"


def iso_epoch(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 time (``2026-01-02T03:04:05Z``; no zone means UTC)."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def window_rate(items: int, first_item_at: float | None, now: float, window_s: float) -> tuple[float, float]:
    """Items per hour over the window the client was actually working in, and that window's length.

    The window is the last ``window_s`` seconds, cut to start where the client's earliest item in
    it was made: a run that began 3 minutes ago is rated over 3 minutes, not over an hour. From
    the first item to now, ``items - 1`` more were made (the first one ends the span's start).
    Without a known first item the whole window is used.
    """
    if items <= 0:
        return 0.0, 0.0
    if first_item_at is None:
        return items * HOUR_S / window_s, window_s
    span = max(1.0, min(window_s, now - first_item_at))  # processed_at has one-second resolution
    made = items - 1 if items > 1 else 1
    return made * HOUR_S / span, span


def eta_from_items(items_left: int, rate_hour: float, rate_day: float) -> tuple[float | None, str]:
    """Seconds until ``items_left`` items are published at the recent item rate, and its basis."""
    if items_left <= 0:
        return 0.0, "complete"
    if rate_hour > 0:
        return items_left * HOUR_S / rate_hour, f"{items_left} items left at the last hour's rate"
    if rate_day > 0:
        return items_left * HOUR_S / rate_day, f"{items_left} items left at the last day's rate"
    return None, f"{items_left} items left; nothing published in the last day"


def _lease_rows(leases: tuple[Lease, ...], now: float) -> tuple[LeaseRow, ...]:
    rows = [LeaseRow(unit=le.unit, owner=le.owner, age_s=now - le.acquired_at,
                     expires_in_s=le.expires_at - now, expired=le.expired(now)) for le in leases]
    return tuple(sorted(rows, key=lambda r: (r.owner, r.unit)))


def _client_rows(snap: LedgerSnapshot, now: float) -> tuple[ClientRow, ...]:
    active: dict[str, int] = {}
    expired: dict[str, int] = {}
    for lease in snap.leases:
        bucket = expired if lease.expired(now) else active
        bucket[lease.owner] = bucket.get(lease.owner, 0) + 1
    activity = {c.client: c for c in snap.clients}
    rows = []
    for client in sorted(set(activity) | set(active) | set(expired)):
        a = activity.get(client, ClientActivity(client))
        hour, hour_s = window_rate(a.published_last_hour, a.first_item_last_hour, now, HOUR_S)
        day, day_s = window_rate(a.published_last_day, a.first_item_last_day, now, DAY_S)
        rows.append(ClientRow(
            client=client,
            leases_active=active.get(client, 0),
            leases_expired=expired.get(client, 0),
            published=a.published,
            units_done=a.units_done,
            rate_last_hour=hour,
            rate_last_day=day,
            last_publish_ago_s=None if a.last_publish_at is None else max(0.0, now - a.last_publish_at),
            window_last_hour_s=hour_s,
            window_last_day_s=day_s,
        ))
    return tuple(rows)


def build_status(snap: LedgerSnapshot, units_total: int | None = None, *,
                 source: SourceUnits | None = None) -> StatusReport:
    """The status report of ``snap``.

    ``source`` (the configured source's units, see ``SourceUnits``) gives the units' progress and
    an ETA from the items left and the recent item rate; a bare ``units_total`` (the source's unit
    count) gives an ETA from the unit rate only.
    """
    now = snap.taken_at
    leases = _lease_rows(snap.leases, now)
    expired = sum(1 for r in leases if r.expired)
    held = len(leases) - expired
    clients = _client_rows(snap, now)
    rate_hour = sum(c.rate_last_hour for c in clients)
    rate_day = sum(c.rate_last_day for c in clients)
    units_done = snap.units_done
    if source is not None:
        units_total, units_done = source.total, source.done
        eta, basis = eta_from_items(source.items_left, rate_hour, rate_day)
    else:
        left = None if units_total is None else max(0, units_total - snap.units_done)
        eta, basis = eta_seconds(left, snap.units_done_last_hour, snap.units_done_last_day)
    free = None if units_total is None else max(0, units_total - units_done - held)
    return StatusReport(
        store=snap.store,
        taken_at=now,
        published=snap.published,
        excluded=snap.excluded,
        failed=dict(sorted(snap.failed.items())),
        failed_total=sum(snap.failed.values()),
        units_total=units_total,
        units_done=units_done,
        units_leased=held,
        units_expired_leases=expired,
        units_free=free,
        rate_last_hour=rate_hour,
        rate_last_day=rate_day,
        eta_s=eta,
        eta_basis=basis,
        clients=clients,
        leases=leases,
        shards_pending=snap.shards_pending,
        budgets=dict(snap.budgets),
        window_last_hour_s=max((c.window_last_hour_s for c in clients), default=0.0),
        window_last_day_s=max((c.window_last_day_s for c in clients), default=0.0),
        items_left=None if source is None else source.items_left,
        range_size=None if source is None else source.range_size,
    )


def human_duration(seconds: float | None) -> str:
    """``3d 4h``, ``2h 05m``, ``4m 10s``, ``12s``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(abs(seconds)))
    sign = "-" if seconds < 0 else ""
    if s >= 86400:
        return f"{sign}{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{sign}{s // 60}m {s % 60:02d}s"
    return f"{sign}{s}s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    return [line.rstrip() for line in lines]


def _rate_text(per_hour: float, window_s: float, name: str) -> str:
    over = f"the last {name}" if window_s <= 0 or window_s >= (HOUR_S if name == "hour" else DAY_S) - 1 \
        else f"the last {human_duration(window_s)}"
    return f"{per_hour:.1f} items/h ({per_hour / HOUR_S:.2f} items/s) over {over}"


def format_status(report: StatusReport, max_leases: int = 50) -> str:
    """The report as plain text: totals, units, the per-client table and the leases."""
    failed = ", ".join(f"{k}: {v}" for k, v in report.failed.items()) or "none"
    total = "unknown" if report.units_total is None else str(report.units_total)
    free = "unknown" if report.units_free is None else str(report.units_free)
    lines = [
        f"dataset: {report.store}",
        f"items: {report.published} published, {report.failed_total} failed ({failed}), "
        f"{report.excluded} removed",
        f"units: {report.units_done} done, {report.units_leased} leased, "
        f"{report.units_expired_leases} expired leases, {free} free (of {total})"
        + ("" if report.range_size is None else f"; {report.range_size} items per unit"),
        "rate: " + (_rate_text(report.rate_last_hour, report.window_last_hour_s, "hour")
                    if report.window_last_day_s == report.window_last_hour_s < HOUR_S  # one window: no repeat
                    else f"{_rate_text(report.rate_last_hour, report.window_last_hour_s, 'hour')}, "
                         f"{_rate_text(report.rate_last_day, report.window_last_day_s, 'day')}"),
        f"eta: {human_duration(report.eta_s)} ({report.eta_basis})",
    ]
    if report.shards_pending:
        # "index files", not "shards": in the sharded layout a shard is a tar of items.
        lines.append(f"index: {report.shards_pending} index files not yet compacted (`compact` merges them)")
    if report.budgets:
        lines.append("budgets: " + ", ".join(f"{k} {v}" for k, v in sorted(report.budgets.items())))
    lines += ["", "clients:"]
    lines += _table(
        ["client", "leases", "expired", "published", "units", "items/h (1h)", "items/h (24h)", "last publish"],
        [[c.client, str(c.leases_active), str(c.leases_expired), str(c.published), str(c.units_done),
          f"{c.rate_last_hour:.1f}", f"{c.rate_last_day:.1f}",
          "-" if c.last_publish_ago_s is None else human_duration(c.last_publish_ago_s) + " ago"]
         for c in report.clients],
    )
    lines += ["", "leases:"]
    shown = report.leases[:max_leases]
    lines += _table(
        ["unit", "owner", "age", "expires in", "state"],
        [[r.unit, r.owner, human_duration(r.age_s), human_duration(r.expires_in_s),
          "expired" if r.expired else "held"] for r in shown],
    )
    if len(report.leases) > len(shown):
        lines.append(f"... and {len(report.leases) - len(shown)} more (use --json for all)")
    return "\n".join(lines)
