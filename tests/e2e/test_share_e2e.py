"""GSPLAT_UPLOAD=1 through the real CLI against the loopback gsplat emulator: a failed share leaves the
item published without share fields, and ``share --missing`` fills them in later."""

from __future__ import annotations

import io
import json
from pathlib import Path

from e2e_utils import (
    check_consistent,
    local_parquet_share_fields,
    make_photos,
    parquet_share_fields,
    publish_times,
    read_rows,
    run_cli,
    share_fields_of,
)

from emulators.faults import Fault
from emulators.gsplat import GsplatEmulator


def test_a_failed_share_leaves_the_item_published_and_share_missing_fills_it_in(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 4, seed=12)
    with GsplatEmulator() as emu:
        emu.faults.add(Fault(status=500), path="order.createOrder", times=4 * 4)
        env = {"GSPLAT_UPLOAD": "1", "GSPLAT_BASE": emu.base_url, "GSPLAT_ALLOW_PRIVATE_BASE": "1",
               "GSPLAT_FILTER_VISIBILITY": "500", "DOWNLOAD_WORKERS": "1", "UPLOAD_WORKERS": "1"}
        first = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                        "--store", f"local:{store}", **env)
        assert first.returncode == 0, first.stderr
        rows = check_consistent(store)
        assert len(rows) == 4
        unshared = [r for r in rows if not r["gsplat_share_id"]]
        assert unshared, "the injected 500s should have failed at least one share"
        # The Parquet index (what load_dataset shows) has the run's shares, recorded after publish.
        assert local_parquet_share_fields(store) == share_fields_of(rows)
        assert run_cli(tmp_path, "compact", "--store", f"local:{store}").returncode == 0  # rows now in a part
        emu.faults = type(emu.faults)()  # the service recovers
        again = run_cli(tmp_path, "share", "--missing", "--store", f"local:{store}", **env)
        assert again.returncode == 0, again.stderr
        assert f"shared {len(unshared)}" in again.stdout
        rows = read_rows(store)
        assert len(rows) == 4 and all(r["gsplat_share_id"] and r["gsplat_url"] for r in rows)
        check_consistent(store)
        shown = local_parquet_share_fields(store)
        assert shown == share_fields_of(rows) and all(f["gsplat_url"] for f in shown.values())
    # A Parquet index that lost them (as one written before share fields were carried over): verify
    # names the rows, and compact brings them back from the ledger.
    stale_share_fields(store, rows[0]["id"])
    found = run_cli(tmp_path, "verify", "--store", f"local:{store}", "--json")
    problems = json.loads(found.stdout)["problems"]
    assert found.returncode == 1 and [(p["kind"], p["subject"]) for p in problems] == [
        ("index_mismatch", rows[0]["id"])], problems
    assert "gsplat_url" in problems[0]["detail"]
    assert run_cli(tmp_path, "compact", "--store", f"local:{store}").returncode == 0
    assert local_parquet_share_fields(store) == share_fields_of(rows)
    check_consistent(store)


def stale_share_fields(store: Path, item_id: str) -> None:
    """Blank one row's share fields in the local store's Parquet index file that holds it."""
    from sharp_dataset_pipeline.publish.index_fields import LATE_FIELDS, read_fields, rewrite_fields

    for path in (store / "data" / "index").rglob("*.parquet"):
        with path.open("rb") as fh:
            if item_id not in read_fields(fh):
                continue
        data = path.read_bytes()
        with path.open("wb") as out:
            rewrite_fields(io.BytesIO(data), {item_id: dict.fromkeys(LATE_FIELDS, "")}, out)
        return
    raise AssertionError(f"{item_id} is in no Parquet index file")


SHARE_DELAY_S = 4.0


def test_a_slow_share_endpoint_never_delays_publish(tmp_path: Path) -> None:
    """Measured: 4 photos, every share answered after SHARE_DELAY_S. Publishing that waits for shares
    spreads the 4 publishes over >= 3 * SHARE_DELAY_S (seen: 14.7, 26.8, 40.3, 52.5 s with failing shares,
    when sharing ran inside post-processing); publishing that does not wait (the share stage after
    publish) puts them all within one share delay, and the run still records every share."""
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 4, seed=15)
    with GsplatEmulator() as emu:
        emu.faults.add(Fault(delay_s=SHARE_DELAY_S), path="order.createOrder", times=4)
        env = {"GSPLAT_UPLOAD": "1", "GSPLAT_BASE": emu.base_url, "GSPLAT_ALLOW_PRIVATE_BASE": "1",
               "GSPLAT_FILTER_VISIBILITY": "500", "DOWNLOAD_WORKERS": "1", "UPLOAD_WORKERS": "1"}
        done = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                       "--store", f"local:{store}", "--batch-size", "1", **env)
        assert done.returncode == 0, done.stderr[-2000:]
    times = sorted(t for ts in publish_times(store).values() for t in ts)
    assert len(times) == 4
    assert times[-1] - times[0] < SHARE_DELAY_S, f"publishes spread over {times[-1] - times[0]:.1f} s"
    rows = read_rows(store)
    assert all(r["gsplat_share_id"] for r in rows), "a slow share must still be recorded"


def test_shares_still_pending_at_the_drain_deadline_are_left_for_share_missing(tmp_path: Path) -> None:
    """A gsplat.org that hangs: the run publishes everything, waits STOP_DRAIN_SECS for the share stage,
    ends saying how many shares it left, and ``share --missing`` makes them once the service answers."""
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 3, seed=17)
    with GsplatEmulator() as emu:
        emu.faults.add(Fault(delay_s=60.0), path="order.uploadGaussianSplat", times=3)
        env = {"GSPLAT_UPLOAD": "1", "GSPLAT_BASE": emu.base_url, "GSPLAT_ALLOW_PRIVATE_BASE": "1",
               "GSPLAT_FILTER_VISIBILITY": "500", "STOP_DRAIN_SECS": "2"}
        done = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                       "--store", f"local:{store}", "--batch-size", "1", **env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "published 3" in done.stdout
        assert "gsplat shares: 0 made, 3 left for sharp-dataset share --missing" in done.stdout
        rows = check_consistent(store)
        assert len(rows) == 3 and not any(r["gsplat_share_id"] for r in rows)
        emu.faults = type(emu.faults)()  # the service answers again
        later = run_cli(tmp_path, "share", "--missing", "--store", f"local:{store}", **env)
        assert later.returncode == 0, later.stderr[-2000:]
        assert "shared 3" in later.stdout
    rows = check_consistent(store)
    assert len(rows) == 3 and all(r["gsplat_share_id"] for r in rows)


def test_share_missing_on_the_hub_store_records_fields_in_one_commit(tmp_path: Path) -> None:
    from emulators.hub import HubEmulator, index_rows

    photos = tmp_path / "photos"
    make_photos(photos, 3, seed=14)
    repo = "someone/shared"
    with HubEmulator() as hub, GsplatEmulator() as emu:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_sharecanary0123456789abcdef", "GSPLAT_BASE": emu.base_url,
               "GSPLAT_ALLOW_PRIVATE_BASE": "1", "GSPLAT_FILTER_VISIBILITY": "500"}
        first = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                        "--store", f"hf:{repo}", **env)
        assert first.returncode == 0, first.stderr[-2000:]
        rows = index_rows(hub.files(repo))
        assert len(rows) == 3 and not any(r["gsplat_share_id"] for r in rows)
        compacted = run_cli(tmp_path, "compact", "--store", f"hf:{repo}", **env)  # the rows move into a part
        assert compacted.returncode == 0, compacted.stderr[-2000:]
        assert [p for p in hub.files(repo) if p.startswith("data/index/parts/")]
        commits_before = len(hub.history(repo))
        shared = run_cli(tmp_path, "share", "--missing", "--store", f"hf:{repo}", **env)
        assert shared.returncode == 0, shared.stderr[-2000:]
        assert "shared 3" in shared.stdout
        files = hub.files(repo)
        rows = index_rows(files)
        assert len(rows) == 3 and all(r["gsplat_share_id"] and r["gsplat_url"] for r in rows)
        assert len(hub.history(repo)) == commits_before + 1, "late shares are recorded in one commit"
        assert parquet_share_fields(files) == share_fields_of(rows)  # the Parquet index, in that commit
        again = run_cli(tmp_path, "share", "--missing", "--store", f"hf:{repo}", **env)
        assert again.returncode == 0 and "shared 0, already shared 3" in again.stdout


def test_a_run_to_the_hub_records_its_shares_late_in_one_commit(tmp_path: Path) -> None:
    """GSPLAT_UPLOAD=1 into a Hub repo: the share stage records the run's shares after publishing,
    through the path ``share --missing`` uses (one commit per 50 items), not one commit per item."""
    from emulators.hub import HubEmulator, index_rows

    photos = tmp_path / "photos"
    make_photos(photos, 3, seed=16)
    repo = "someone/shared-live"
    with HubEmulator() as hub, GsplatEmulator() as emu:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_sharecanary0123456789abcdef", "GSPLAT_UPLOAD": "1",
               "GSPLAT_BASE": emu.base_url, "GSPLAT_ALLOW_PRIVATE_BASE": "1", "GSPLAT_FILTER_VISIBILITY": "500"}
        done = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                       "--store", f"hf:{repo}", "--batch-size", "1", **env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "gsplat shares: 3 made, 0 left for sharp-dataset share --missing" in done.stdout
        files = hub.files(repo)
        rows = index_rows(files)
        assert len(rows) == 3 and all(r["gsplat_share_id"] in emu.orders for r in rows)
        shown = parquet_share_fields(files)
        assert shown == share_fields_of(rows) and all(f["gsplat_share_id"] for f in shown.values())
        titles = [c.title for c in hub.history(repo)]
        assert sum(t.startswith("record fields of") for t in titles) == 1, titles
        again = run_cli(tmp_path, "share", "--missing", "--store", f"hf:{repo}", **env)
        assert again.returncode == 0 and "shared 0, already shared 3" in again.stdout
