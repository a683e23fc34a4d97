"""kill -9 during Unsplash download tracking repeats at most the one call in flight, on both stores.

The real CLI runs ``unsplash-list`` against the Unsplash emulator (which counts tracking calls per
photo) into a local store and into the Hub emulator. Tracking calls are slowed down, and each
process is killed a random moment after its followup worker started calling, many times over; a
last run finishes the work. Each kill may repeat only the one call it interrupted.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_utils import cli_cmd, cli_env, read_rows

from emulators.hub import HubEmulator, index_rows
from emulators.unsplash import UnsplashEmulator

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

KEY = "test-access-key-0123"
TOKEN = "hf_trackingkillcanary0123456789"
REPO = "crashy/splats"
N_PHOTOS = 60
TRACK_ROUTE = "/photos/:id/download"


def _env(emu: UnsplashEmulator, **extra: str) -> dict[str, str]:
    return cli_env(UNSPLASH_ACCESS_KEY=KEY, UNSPLASH_API_BASE=emu.base_url, UNSPLASH_DETAILS="never",
                   UNSPLASH_APP_NAME="e2e_app", PLANAR_RESOLUTION="32", CLIENT_ID="crashy", **extra)


def _kill_while_tracking(emu: UnsplashEmulator, proc: subprocess.Popen[bytes], rng: random.Random) -> bool:
    """Wait until this process has made a tracking call, then kill it a random moment later."""
    before = sum(emu.tracked.values())
    deadline = time.monotonic() + 60
    while proc.poll() is None and sum(emu.tracked.values()) <= before and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.6))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return True


def _run_with_kills(tmp_path: Path, emu: UnsplashEmulator, store_arg: str, published: Callable[[], set[str]],
                    **extra: str) -> tuple[set[str], int]:
    # Slow tracking calls: a kill lands inside a pass over many completions, not between passes.
    emu.faults.delay(0.08, path=TRACK_ROUTE, times=100_000)
    env = _env(emu, **extra)
    args = ("run", "--source", "unsplash-list", "--predictor", "planar", "--store", store_arg,
            "--range-size", "30", "--batch-size", "10")
    rng = random.Random(7)
    kills = 0
    for attempt in range(10):
        if len(published()) >= N_PHOTOS:
            break
        proc = subprocess.Popen(cli_cmd(*args, "--run-id", f"k{attempt}"), cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kills += _kill_while_tracking(emu, proc, rng)
        if proc.poll() is None:
            proc.wait(timeout=300)
    final = subprocess.run(cli_cmd(*args, "--run-id", "final"), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    return published(), kills


def _check(emu: UnsplashEmulator, ids: set[str], kills: int) -> None:
    assert len(ids) == N_PHOTOS and kills >= 5, (len(ids), kills)
    # Every published photo is tracked, nothing else is.
    assert set(emu.tracked) == ids
    # Each kill repeats at most the one call it interrupted.
    repeats = sum(emu.tracked.values()) - len(ids)
    assert repeats <= kills, (repeats, kills, {k: v for k, v in emu.tracked.items() if v > 1})


def test_kill9_repeats_at_most_one_tracking_call_on_the_local_store(tmp_path: Path) -> None:
    store = tmp_path / "out"

    def published() -> set[str]:
        return {r["id"] for r in read_rows(store)} if (store / "data").exists() else set()

    with UnsplashEmulator(n_photos=N_PHOTOS, access_key=KEY, leading_dash_ids=False) as emu:
        ids, kills = _run_with_kills(tmp_path, emu, f"local:{store}", published)
        _check(emu, ids, kills)


def test_kill9_repeats_at_most_one_tracking_call_on_the_hub_store(tmp_path: Path) -> None:
    with UnsplashEmulator(n_photos=N_PHOTOS, access_key=KEY, leading_dash_ids=False) as emu, \
            HubEmulator() as hub:

        def published() -> set[str]:
            return {r["id"] for r in index_rows(hub.files(REPO))} if hub.repos else set()

        ids, kills = _run_with_kills(tmp_path, emu, f"hf:{REPO}", published, HF_ENDPOINT=hub.url,
                                     HF_TOKEN=TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1")
        _check(emu, ids, kills)
        # The journal of completions is on this client's disk, and all it held reached the repo.
        journals = list((tmp_path / "runs" / ".state").glob("hub-followups-*.jsonl"))
        assert len(journals) == 1 and journals[0].read_text() == ""
