"""``status`` right after a real run, through the real CLI, on the local store and the Hub emulator:
rates are items per hour over the window the client actually worked in, the ETA comes from the
items left at that rate, and units are counted with the range size the run used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.e2e_utils import make_photos, run_cli
from emulators.hub import HubEmulator

TOKEN = "hf_statusratetoken0123456789"
HUB_ENV = {"HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.fixture(scope="module")
def hub() -> Iterator[HubEmulator]:
    with HubEmulator() as emulator:
        yield emulator


def _stores(hub: HubEmulator, tag: str) -> list[tuple[str, dict[str, str]]]:
    return [("local:store", {}), (f"hf:status/{tag}", {"HF_ENDPOINT": hub.url, **HUB_ENV})]


def _run(cwd: Path, store: str, env: dict[str, str], *extra: str) -> dict:
    proc = run_cli(cwd, "run", "--source", "folder:photos", "--predictor", "planar", "--store", store,
                   "--client-id", "rater", "--planar-resolution", "24", "--batch-size", "4", "--range-size", "10",
                   "--summary-json", "summary.json", *extra, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((cwd / "summary.json").read_text())


def _status(cwd: Path, store: str, env: dict[str, str], *extra: str) -> dict:
    proc = run_cli(cwd, "status", "--store", store, "--source", "folder:photos", "--json", *extra, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("kind", ["local", "hub"])
def test_rate_and_eta_follow_the_items_of_a_run_minutes_old(kind: str, hub: HubEmulator, tmp_path: Path) -> None:
    make_photos(tmp_path / "photos", 40, seed=21)
    store, env = dict(zip(["local", "hub"], _stores(hub, "rate"), strict=True))[kind]
    summary = _run(tmp_path, store, env, "--max-images", "20")
    assert summary["published"] == 20
    doc = _status(tmp_path, store, env)
    run_rate = summary["items_per_s"] * 3600  # items/h of the run over its whole life (startup included)
    # Not "20 items/h over the last hour": the run is seconds old, so its window is seconds long
    # (from its first item to the status call, which starts a few seconds after the run ends).
    assert 0.1 * run_rate < doc["rate_last_hour"] < 5 * run_rate, (doc["rate_last_hour"], run_rate)
    assert doc["window_last_hour_s"] < 120
    assert doc["rate_last_hour"] == pytest.approx(19 * 3600 / doc["window_last_hour_s"])
    assert doc["clients"][0]["rate_last_hour"] == doc["rate_last_hour"]
    # 2 of 4 units of 10 are done: 20 items left, at the run's pace, not "no unit finished".
    assert doc["eta_basis"] == "20 items left at the last hour's rate"
    assert (doc["units_total"], doc["units_done"], doc["range_size"], doc["items_left"]) == (4, 2, 10, 20)
    assert doc["eta_s"] == pytest.approx(20 * 3600 / doc["rate_last_hour"])
    assert doc["eta_s"] < 20 * summary["elapsed_s"] + 60
    text = run_cli(tmp_path, "status", "--store", store, "--source", "folder:photos", **env)
    assert "items/s) over the last " in text.stdout and "items/h over the last hour" not in text.stdout
    assert "10 items per unit" in text.stdout


@pytest.mark.parametrize("kind", ["local", "hub"])
def test_units_are_counted_with_the_range_size_the_run_used(kind: str, hub: HubEmulator, tmp_path: Path) -> None:
    make_photos(tmp_path / "photos", 25, seed=22)
    store, env = dict(zip(["local", "hub"], _stores(hub, "range"), strict=True))[kind]
    summary = _run(tmp_path, store, env)
    assert summary["published"] == 25
    doc = _status(tmp_path, store, env)  # RANGE_SIZE is not set here: the default would be 300
    assert (doc["units_total"], doc["units_done"], doc["units_free"]) == (3, 3, 0)
    assert doc["range_size"] == 10
    assert doc["eta_s"] == 0.0 and doc["eta_basis"] == "complete"
