"""Two processes on one local store: disjoint work while leases are valid; expired leases are taken over."""

from __future__ import annotations

from pathlib import Path

from e2e_utils import (
    check_consistent,
    cli_cmd,
    cli_env,
    err_text,
    make_photos,
    run_cli,
    start_together,
)

from sharp_dataset_pipeline.records import Unit
from sharp_dataset_pipeline.sources.folder import FolderSource
from sharp_dataset_pipeline.stores.local import LocalStore


def _processed(run_dir: Path) -> set[str]:
    return {p.stem for p in (run_dir / "gaussians").glob("*.ply")}


def test_two_processes_split_the_work(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 40, seed=4, size=(200, 150))
    args = ("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}",
            "--range-size", "5", "--batch-size", "2", "--planar-resolution", "200")
    # Both hold a unit behind a PAUSE file before either may work: they are sure to run at the same time.
    procs = start_together(tmp_path, {name: (cli_cmd(*args, "--run-id", name), cli_env(CLIENT_ID=name))
                                      for name in ("alpha", "beta")}, tmp_path / "control")
    for name, p in procs.items():
        assert p.wait(timeout=300) == 0, err_text(tmp_path, name)
    a, b = _processed(tmp_path / "runs" / "alpha"), _processed(tmp_path / "runs" / "beta")
    assert a and b, (len(a), len(b))
    assert not (a & b), f"processed twice: {sorted(a & b)[:5]}"
    rows = check_consistent(store)
    assert len(rows) == 40
    assert {r["client_id"] for r in rows} == {"alpha", "beta"}
    assert {r["id"] for r in rows if r["client_id"] == "alpha"} == a


def test_valid_lease_is_respected_and_expired_lease_taken_over(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 6, seed=5)
    source = FolderSource(photos, range_size=3)
    units: list[Unit] = list(source.units())
    assert len(units) == 2
    ledger = LocalStore(store)
    ledger.open()
    assert ledger.acquire(units[0], "someone-else", ttl_s=3600) is not None
    ledger.close()
    args = ("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}",
            "--range-size", "3")
    first = run_cli(tmp_path, *args, "--run-id", "one", CLIENT_ID="me")
    assert first.returncode == 0, first.stderr
    assert len(check_consistent(store)) == 3, "a validly leased unit was processed"

    ledger = LocalStore(store)
    ledger.open()
    ledger.release([units[0].key], "someone-else")
    assert ledger.acquire(units[0], "someone-else", ttl_s=0.5) is not None
    ledger.close()
    import time

    time.sleep(1.0)
    second = run_cli(tmp_path, *args, "--run-id", "two", CLIENT_ID="me")
    assert second.returncode == 0, second.stderr
    assert len(check_consistent(store)) == 6, "an expired lease was not taken over"


def test_a_run_cut_short_by_max_images_releases_its_unit_at_once(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 6, seed=13)
    args = ("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}")
    small = run_cli(tmp_path, *args, "--run-id", "small", "--max-images", "2", CLIENT_ID="small")
    assert small.returncode == 0, small.stderr
    assert "MAX_IMAGES=2" in small.stdout
    assert len(check_consistent(store)) == 2
    other = run_cli(tmp_path, *args, "--run-id", "other", CLIENT_ID="other")
    assert other.returncode == 0, other.stderr
    assert len(check_consistent(store)) == 6, "the unit was left leased by the small run"
