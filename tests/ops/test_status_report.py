"""The pure status report: per-client table, rates, ETA, text and JSON."""

from __future__ import annotations

import json

import pytest

from sharp_dataset_pipeline.ledger.status import (
    ClientActivity,
    LedgerSnapshot,
    build_status,
    eta_seconds,
    format_status,
    human_duration,
)
from sharp_dataset_pipeline.records import Lease

NOW = 1_000_000.0


def _snapshot() -> LedgerSnapshot:
    return LedgerSnapshot(
        store="local:x", taken_at=NOW, published=120, excluded=2, failed={"decode": 3, "http_404": 1},
        units_done=10, units_done_last_hour=4, units_done_last_day=10,
        leases=(Lease("u/1", "alpha", "n", NOW - 600, NOW + 300), Lease("u/2", "beta", "n", NOW - 9000, NOW - 60),
                Lease("u/3", "alpha", "n", NOW - 60, NOW + 900)),
        clients=(ClientActivity("alpha", 100, 30, 100, 4, NOW - 5), ClientActivity("gamma", 20, 0, 24, 6, NOW - 7200)),
    )


def test_per_client_table_merges_leases_and_activity() -> None:
    report = build_status(_snapshot(), units_total=30)
    by = {c.client: c for c in report.clients}
    assert sorted(by) == ["alpha", "beta", "gamma"]
    assert (by["alpha"].leases_active, by["alpha"].leases_expired, by["alpha"].published) == (2, 0, 100)
    assert (by["beta"].leases_active, by["beta"].leases_expired, by["beta"].published) == (0, 1, 0)
    assert by["alpha"].rate_last_hour == 30.0
    assert by["gamma"].rate_last_day == pytest.approx(1.0)  # 24 items in a day
    assert by["gamma"].last_publish_ago_s == 7200
    assert by["beta"].last_publish_ago_s is None
    assert report.units_leased == 2 and report.units_expired_leases == 1
    assert report.units_free == 30 - 10 - 2
    assert report.failed_total == 4
    assert report.rate_last_hour == 30.0


def test_eta_uses_the_last_hour_then_the_day() -> None:
    report = build_status(_snapshot(), units_total=30)
    assert report.eta_s == pytest.approx(20 * 3600 / 4)
    assert eta_seconds(20, 0, 10) == (pytest.approx(20 * 86400 / 10), "units done in the last day")
    assert eta_seconds(20, 0, 0)[0] is None
    assert eta_seconds(None, 5, 5) == (None, "source size unknown")
    assert eta_seconds(0, 0, 0) == (0.0, "complete")
    assert build_status(_snapshot()).eta_s is None and build_status(_snapshot()).units_free is None


def test_text_and_json_forms() -> None:
    report = build_status(_snapshot(), units_total=30)
    text = format_status(report)
    assert "120 published, 4 failed (decode: 3, http_404: 1), 2 removed" in text
    assert "8 free (of 30)" in text
    assert "eta: 5h 00m (units done in the last hour)" in text
    lines = text.splitlines()
    assert any(line.startswith("alpha ") and " 2 " in line for line in lines)
    assert all(line == line.rstrip() for line in lines)
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["clients"][1]["client"] == "beta" and [le["owner"] for le in doc["leases"]] == ["alpha", "alpha", "beta"]
    assert doc["leases"][2]["expired"] is True
    assert doc["units_total"] == 30


def test_long_lease_lists_are_cut_in_text_only() -> None:
    leases = tuple(Lease(f"u/{i:03d}", "alpha", "n", NOW, NOW + 60) for i in range(80))
    report = build_status(LedgerSnapshot(store="s", taken_at=NOW, leases=leases))
    assert "... and 30 more" in format_status(report)
    assert len(report.to_json()["leases"]) == 80


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (5, "5s"), (65, "1m 05s"), (3725, "1h 02m"),
                                                (90000, "1d 1h"), (-30, "-30s")])
def test_human_duration(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_rates_follow_each_clients_actual_window_and_the_eta_the_items_left() -> None:
    from sharp_dataset_pipeline.ledger.status import SourceUnits, eta_from_items, window_rate

    fresh = ClientActivity("fresh", 85, 85, 85, 0, NOW - 1, first_item_last_hour=NOW - 60, first_item_last_day=NOW - 60)
    steady = ClientActivity("steady", 900, 300, 900, 3, NOW - 2, first_item_last_hour=NOW - 5000,
                            first_item_last_day=NOW - 20000)
    report = build_status(LedgerSnapshot(store="s", taken_at=NOW, clients=(fresh, steady)),
                          source=SourceUnits(total=10, done=3, items_left=700, range_size=100))
    by = {c.client: c for c in report.clients}
    assert by["fresh"].rate_last_hour == pytest.approx(84 * 3600 / 60)  # a minute old: rated over a minute
    assert by["fresh"].window_last_hour_s == 60
    assert by["steady"].rate_last_hour == pytest.approx(299.0)  # busy all hour: the whole hour
    assert by["steady"].rate_last_day == pytest.approx(899 * 3600 / 20000)
    assert report.eta_s == pytest.approx(700 * 3600 / (84 * 60 + 299))
    assert report.eta_basis == "700 items left at the last hour's rate"
    assert (report.units_total, report.units_done, report.units_free) == (10, 3, 7)
    assert "; 100 items per unit" in format_status(report)
    assert window_rate(0, None, NOW, 3600) == (0.0, 0.0)
    assert window_rate(10, None, NOW, 3600) == (10.0, 3600)  # start unknown: the whole window, as before
    assert eta_from_items(0, 0, 0) == (0.0, "complete")
    assert eta_from_items(5, 0, 10)[0] == pytest.approx(1800)
    assert eta_from_items(5, 0, 0)[0] is None
