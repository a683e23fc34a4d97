"""Ledger snapshot → status report: per-client table, publish rates, ETA. Pure: time is passed in.

A store turns its ledger into a ``LedgerSnapshot`` from aggregates only (counts, sums per
client, the lease rows), so the cost of ``status`` grows with the number of clients, leases
and publish steps, never with the number of index rows. Everything here works on that
snapshot: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
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
        rows.append(ClientRow(
            client=client,
            leases_active=active.get(client, 0),
            leases_expired=expired.get(client, 0),
            published=a.published,
            units_done=a.units_done,
            rate_last_hour=float(a.published_last_hour),
            rate_last_day=a.published_last_day * HOUR_S / DAY_S,
            last_publish_ago_s=None if a.last_publish_at is None else max(0.0, now - a.last_publish_at),
        ))
    return tuple(rows)


def build_status(snap: LedgerSnapshot, units_total: int | None = None) -> StatusReport:
    """The status report of ``snap``; ``units_total`` is the source's unit count when finite."""
    now = snap.taken_at
    leases = _lease_rows(snap.leases, now)
    expired = sum(1 for r in leases if r.expired)
    held = len(leases) - expired
    free = None if units_total is None else max(0, units_total - snap.units_done - held)
    left = None if units_total is None else max(0, units_total - snap.units_done)
    eta, basis = eta_seconds(left, snap.units_done_last_hour, snap.units_done_last_day)
    clients = _client_rows(snap, now)
    return StatusReport(
        store=snap.store,
        taken_at=now,
        published=snap.published,
        excluded=snap.excluded,
        failed=dict(sorted(snap.failed.items())),
        failed_total=sum(snap.failed.values()),
        units_total=units_total,
        units_done=snap.units_done,
        units_leased=held,
        units_expired_leases=expired,
        units_free=free,
        rate_last_hour=sum(c.rate_last_hour for c in clients),
        rate_last_day=sum(c.rate_last_day for c in clients),
        eta_s=eta,
        eta_basis=basis,
        clients=clients,
        leases=leases,
        shards_pending=snap.shards_pending,
        budgets=dict(snap.budgets),
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
        f"{report.units_expired_leases} expired leases, {free} free (of {total})",
        f"rate: {report.rate_last_hour:.1f} items/h over the last hour, "
        f"{report.rate_last_day:.1f} items/h over the last day",
        f"eta: {human_duration(report.eta_s)} ({report.eta_basis})",
    ]
    if report.shards_pending:
        lines.append(f"index: {report.shards_pending} shards not yet compacted")
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
