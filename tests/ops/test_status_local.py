"""status on a local store made by the real pipeline: ledger aggregates, never the rows or the files."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from e2e.e2e_utils import read_rows
from sharp_dataset_pipeline.ops.status import count_units, dataset_status, publish_events
from sharp_dataset_pipeline.records import Failure, Unit
from sharp_dataset_pipeline.stores.local import LocalStore

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")


def test_status_counts_come_from_the_ledger_not_the_files(workspace: Path) -> None:
    store = workspace / "store"
    rows = read_rows(store)
    assert len(rows) == 6
    # Wreck every index file and every item file: a status that read them would see nothing.
    for shard in (store / "data").glob("*.jsonl"):
        shard.write_text("not json\n")
    for row in rows:
        shutil.rmtree((store / row["ply_path"]).parent)
    report = dataset_status(LocalStore(store).admin(), now=time.time())
    assert report.published == 6
    assert [(c.client, c.published, c.units_done) for c in report.clients] == [("alpha", 6, 1)]
    # Items per hour over the window since the run's first item (seconds ago), not 6 over an hour.
    alpha = report.clients[0]
    assert 0 < alpha.window_last_hour_s < 3600
    assert alpha.rate_last_hour == pytest.approx(5 * 3600 / alpha.window_last_hour_s)
    assert report.units_done == 1 and report.leases == ()


def test_status_shows_every_clients_leases_failures_and_eta(workspace: Path) -> None:
    root = workspace / "store"
    now = time.time()
    store = LocalStore(root, clock=lambda: now)
    store.open()
    store.acquire(Unit("folder/other/000000-000299", 0, 300), "beta", 600.0)
    store.acquire(Unit("folder/other/000300-000599", 300, 600), "beta", 600.0)
    old = LocalStore(root, clock=lambda: now - 7200)
    old.open()
    old.acquire(Unit("folder/other/000600-000899", 600, 900), "gamma", 60.0)
    store.record_failures([Failure("bad1", "folder/other/000000-000299", "fetch", "decode", "broken", False)], "beta")
    store.close()
    old.close()
    report = dataset_status(LocalStore(root).admin(), now=now, units_total=5)
    by = {c.client: c for c in report.clients}
    assert (by["beta"].leases_active, by["gamma"].leases_expired, by["alpha"].published) == (2, 1, 6)
    assert report.failed == {"decode": 1}
    assert (report.units_done, report.units_leased, report.units_expired_leases, report.units_free) == (1, 2, 1, 2)
    assert report.eta_s is not None and report.eta_s > 0
    ages = {le.owner: le.age_s for le in report.leases}
    assert 7199 < ages["gamma"] < 7201


def test_status_cli_json_with_a_finite_source(workspace: Path, run_ops) -> None:
    out = run_ops(workspace, "status", "--store", "local:store", "--source", "folder:photos", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["published"] == 6 and doc["units_total"] == 1 and doc["units_free"] == 0
    assert doc["eta_s"] == 0.0 and doc["eta_basis"] == "complete"
    text = run_ops(workspace, "status", "--store", "local:store")
    assert text.returncode == 0 and "alpha" in text.stdout and "6 published" in text.stdout


def test_publish_events_and_unit_counting(workspace: Path) -> None:
    events = publish_events(LocalStore(workspace / "store").admin())
    assert sum(e.items for e in events) == 6 and {e.client for e in events} == {"alpha"}
    assert len(events) == 2  # batch size 4: two publish steps
    assert count_units(Unit(str(i), i, i + 1) for i in range(7)) == 7
    assert count_units((Unit(str(i), i, i + 1) for i in range(10)), cap=5) is None
