"""The real CLI on Unsplash feeds served by the loopback emulator, into a local store.

Each test starts the emulator in this process and runs ``sharp-dataset run`` in a subprocess with
``UNSPLASH_API_BASE`` pointing at it (real time: the emulator's hourly window uses the wall clock).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from e2e_utils import (
    check_consistent,
    cli_cmd,
    cli_env,
    err_text,
    read_rows,
    run_cli,
    start_together,
)

from emulators.faults import Fault
from emulators.unsplash import UnsplashEmulator

KEY = "test-access-key-0123"


def unsplash_env(emu: UnsplashEmulator, **extra: str) -> dict[str, str]:
    env = {"UNSPLASH_ACCESS_KEY": KEY, "UNSPLASH_API_BASE": emu.base_url, "UNSPLASH_DETAILS": "never",
           "UNSPLASH_APP_NAME": "e2e_app", "PLANAR_RESOLUTION": "48"}
    env.update(extra)
    return env


def run_args(store: Path, source: str = "unsplash-list", range_size: int = 30) -> tuple[str, ...]:
    return ("run", "--source", source, "--predictor", "planar", "--store", f"local:{store}",
            "--range-size", str(range_size))


def published_ids(store: Path) -> list[str]:
    return [r["id"] for r in read_rows(store)] if (store / "data").exists() else []


def test_list_run_publishes_every_photo_once_while_new_photos_arrive(tmp_path: Path) -> None:
    with UnsplashEmulator(n_photos=95, access_key=KEY, leading_dash_ids=False) as emu:
        original = set(emu.feed)
        emu.prepend_after_list_requests(every=1, n=3)
        done = run_cli(tmp_path, *run_args(tmp_path / "out"), "--run-id", "r1",
                       **unsplash_env(emu, PER_PAGE="10"))
        assert done.returncode == 0, done.stderr
        rows = check_consistent(tmp_path / "out")
        ids = [r["id"] for r in rows]
        assert set(ids) == original and len(ids) == len(original)
        assert len(emu.feed) > len(original)  # the feed moved during the run
        assert dict(emu.tracked) == {pid: 1 for pid in ids}  # one tracking call per published photo
        row = rows[0]
        assert row["license"] == "Unsplash License" and "utm_medium=referral" in row["page_url"]
        assert row["user_username"] and row["source"] == "unsplash"
        # The key is in no output, row, ledger or file of the run (invariant 9).
        assert KEY not in done.stdout + done.stderr
        for path in [*(tmp_path / "out").rglob("*"), *(tmp_path / "runs").rglob("*")]:
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path
        assert emu.cdn_auth_headers == 0


@pytest.mark.parametrize("source", ["unsplash-list", "unsplash-search"])
def test_a_demo_key_publishes_about_its_budget_and_never_hits_the_limit(tmp_path: Path, source: str) -> None:
    # A new application's key: 50 requests per hour. Units of the default 300 photos, so the whole
    # budget is spent inside the first unit (the intake's first chunk of 64 is never full).
    with UnsplashEmulator(n_photos=400, access_key=KEY, limit=50, leading_dash_ids=False) as emu:
        done = run_cli(tmp_path, "run", "--source", source, "--predictor", "planar",
                       "--store", f"local:{tmp_path / 'out'}", "--summary-json", str(tmp_path / "s.json"),
                       **unsplash_env(emu, STOP_ON_RATE_LIMIT="1", UNSPLASH_QUERIES="e"))
        assert done.returncode == 3, done.stderr  # stopped by the rate limit (exit codes in README)
        out = done.stdout + done.stderr
        ids = published_ids(tmp_path / "out")
        # Each photo costs one tracking call and listing one call per 30 photos; 2 calls stay spare.
        assert 42 <= len(ids) <= 47, len(ids)
        assert f"rate limit reached after {len(ids)} items; the window reopens at" in out
        assert emu.limit_responses == 0 and emu.api_requests <= 50
        assert emu.counts["/cdn"] == len(ids)  # everything fetched was published
        assert dict(emu.tracked) == {pid: 1 for pid in ids}
        summary = json.loads((tmp_path / "s.json").read_text())
        assert summary["stopped"] == "rate limited" and summary["rate_limited_until"] > time.time() + 3000


def test_an_injected_rate_limit_stops_intake_but_not_the_work_in_flight(tmp_path: Path) -> None:
    store = tmp_path / "out"
    with UnsplashEmulator(n_photos=120, access_key=KEY, leading_dash_ids=False) as emu:
        # The first two feed pages are served, the third gets a plain-text 403 rate limit.
        emu.faults.add(Fault(), Fault(), Fault(status=403, body=b"Rate Limit Exceeded",
                                              headers={"Retry-After": "2"}), path="/photos")
        first = run_cli(tmp_path, *run_args(store), "--run-id", "r1", **unsplash_env(emu, PER_PAGE="30"))
        assert first.returncode == 3, first.stderr  # stopped by the rate limit
        assert "rate limit" in (first.stdout + first.stderr).lower()
        assert emu.counts["/photos"] == 3  # no retry storm after the limit
        ids = published_ids(store)
        assert len(ids) == 30  # the page already listed went through predict and publish
        time.sleep(2.5)
        second = run_cli(tmp_path, *run_args(store), "--run-id", "r2", **unsplash_env(emu))
        assert second.returncode == 0, second.stderr
        ids = published_ids(store)
        assert len(ids) == len(set(ids)) == 120
        assert dict(emu.tracked) == {pid: 1 for pid in ids}


def test_tracking_matches_publishing_across_kill_9(tmp_path: Path) -> None:
    store = tmp_path / "out"
    args = run_args(store, range_size=12)
    with UnsplashEmulator(n_photos=72, access_key=KEY, leading_dash_ids=False) as emu:
        emu.faults.delay(0.05, path="/cdn", times=10_000)  # slow the CDN so kills land mid-run
        env = cli_env(**unsplash_env(emu, CLIENT_ID="crashy", DOWNLOAD_WORKERS="1"))
        kills = 0
        for attempt in range(4):
            proc = subprocess.Popen(cli_cmd(*args, "--batch-size", "3", "--run-id", f"k{attempt}"), cwd=tmp_path,
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            before = len(published_ids(store))
            deadline = time.monotonic() + 30
            while proc.poll() is None and len(published_ids(store)) <= before and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1 * attempt)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=60)
        final = subprocess.run(cli_cmd(*args, "--run-id", "final"), cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
        ids = set(published_ids(store))
        assert len(ids) == 72 and kills >= 2
        # Every published photo is tracked, nothing else is; a crash between the tracking call
        # and its ledger mark can repeat that one call at most once per kill.
        assert set(emu.tracked) == ids
        assert sum(emu.tracked.values()) - len(ids) <= kills


def test_two_clients_on_one_store_split_the_list_units(tmp_path: Path) -> None:
    store = tmp_path / "out"
    with UnsplashEmulator(n_photos=120, access_key=KEY, leading_dash_ids=False) as emu:
        # Both hold a unit behind a PAUSE file before either may work: they are sure to run at the same time.
        procs = start_together(tmp_path, {
            name: (cli_cmd(*run_args(store, range_size=15), "--run-id", name, "--batch-size", "4"),
                   cli_env(**unsplash_env(emu, CLIENT_ID=name)))
            for name in ("alpha", "beta")}, tmp_path / "control")
        for name, p in procs.items():
            assert p.wait(timeout=300) == 0, err_text(tmp_path, name)
        made = [{f.stem for f in (tmp_path / "runs" / n / "gaussians").glob("*.ply")} for n in ("alpha", "beta")]
        assert made[0] and made[1], [len(m) for m in made]
        assert not (made[0] & made[1]), "a photo was processed by both clients"
        rows = check_consistent(store)
        assert {r["id"] for r in rows} == set(emu.feed) and len(rows) == 120
        assert {r["client_id"] for r in rows} == {"alpha", "beta"}
        assert dict(emu.tracked) == {r["id"]: 1 for r in rows}


def test_photo_ids_starting_with_a_dash_are_published(tmp_path: Path) -> None:
    with UnsplashEmulator(n_photos=95, access_key=KEY, leading_dash_ids=True) as emu:
        assert any(pid.startswith("-") for pid in emu.feed)
        done = run_cli(tmp_path, *run_args(tmp_path / "out"), **unsplash_env(emu))
        assert done.returncode == 0, done.stderr
        assert set(published_ids(tmp_path / "out")) == set(emu.feed)


def test_a_feed_whose_x_total_overstates_its_pages_is_read_to_its_end_and_marked_done(tmp_path: Path) -> None:
    # X-Total says 50, the pages list 40: the unit's last page comes back empty, which is not drift.
    with UnsplashEmulator(n_photos=40, access_key=KEY, leading_dash_ids=False, total_extra=10) as emu:
        listed = set(emu.feed)
        first = run_cli(tmp_path, *run_args(tmp_path / "out", range_size=50), "--run-id", "r1",
                        **unsplash_env(emu, PER_PAGE="20"))
        second = run_cli(tmp_path, *run_args(tmp_path / "out", range_size=50), "--run-id", "r2",
                         **unsplash_env(emu, PER_PAGE="20"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "the feed lists 10 photos fewer than its X-Total says" in first.stderr
    assert "feed moved" not in first.stderr
    assert set(published_ids(tmp_path / "out")) == listed and len(published_ids(tmp_path / "out")) == 40
    assert dict(emu.tracked) == {pid: 1 for pid in listed}
    # The unit was marked done: the rerun reads nothing and publishes nothing.
    assert second.returncode == 0, second.stderr[-3000:]
    assert "published 0" in second.stdout
    assert len(published_ids(tmp_path / "out")) == 40


def test_a_bad_key_is_one_clear_line_and_exit_code_2(tmp_path: Path) -> None:
    with UnsplashEmulator(n_photos=30, access_key=KEY, leading_dash_ids=False) as emu:
        env = unsplash_env(emu)
        env["UNSPLASH_ACCESS_KEY"] = "wrong-key-ABCDEFGH"
        done = run_cli(tmp_path, *run_args(tmp_path / "out"), **env)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "wrong-key-ABCDEFGH" not in done.stdout + done.stderr
        assert "UNSPLASH_ACCESS_KEY" in done.stderr or "key" in done.stderr.lower()


def test_an_api_outage_stops_intake_and_exits_1_after_publishing_what_it_had(tmp_path: Path) -> None:
    with UnsplashEmulator(n_photos=90, access_key=KEY, leading_dash_ids=False) as emu:
        emu.faults.add(Fault(status=503), path="/photos", times=1000)
        done = run_cli(tmp_path, *run_args(tmp_path / "out"), **unsplash_env(emu))
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "source" in done.stdout
