"""Invariant 7 in waiting mode (STOP_ON_RATE_LIMIT=0): while the Unsplash source waits for its hourly
window, the photos it already handed on are fetched, predicted, published and tracked; then the run
continues in the next window and finishes the feed without a single limit response.

The real runner, Unsplash source and local store run against the loopback emulator. Time is a
``FakeClock`` shared by the emulator's window and the source; the source's sleep holds the first
window wait open (in real time) until every photo listed so far is published, so a pipeline that
keeps listed photos back while it waits fails here instead of passing in no time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from emulators.unsplash import FakeClock, UnsplashEmulator
from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.runner import Runner, RunOptions
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.sources.unsplash import UnsplashOptions, UnsplashSource
from sharp_dataset_pipeline.stores.local import LocalStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from pipeline_utils import TimedPredictor  # noqa: E402

KEY = "test-access-key-0123"


class HeldWindow:
    """The source's sleep: each wait for a window blocks (in real time, up to 30 s) until ``ready()``
    holds, as an hour of real time would let the pipeline finish; the first wait's outcome is kept."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.ready = lambda: True
        self.seen: dict[str, int] = {}
        self.first: dict[str, int] = {}

    def __call__(self, seconds: float) -> None:
        if seconds >= 1.0 and self.first.get("ready", 1):  # a window wait, not a pacing pause
            deadline = time.monotonic() + 30
            while not self.ready() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.first or not self.ready():  # a timeout ends the holding: the test has failed
                self.first = {**self.seen, "ready": int(self.ready())}
        self.clock.sleep(seconds)


def test_waiting_for_the_window_stalls_neither_predict_nor_publish(tmp_path: Path) -> None:
    clock = FakeClock()
    sleep = HeldWindow(clock)
    store = LocalStore(tmp_path / "store")
    store.open()
    with UnsplashEmulator(n_photos=120, clock=clock, access_key=KEY, limit=50, leading_dash_ids=False) as emu, \
            httpx.Client(timeout=10) as http:
        options = UnsplashOptions("list", access_key=KEY, api_base=emu.base_url, range_size=300, details="never",
                                  stop_on_rate_limit=False)
        source = UnsplashSource(options, clock=clock, sleep=sleep, client=http)

        def all_listed_are_published() -> bool:
            sleep.seen["listed"] = source.governor.snapshot(clock()).owed + sum(emu.tracked.values())
            sleep.seen["published"] = store.counts().published
            return sleep.seen["listed"] > 0 and sum(emu.tracked.values()) == sleep.seen["listed"]

        sleep.ready = all_listed_are_published
        opts = RunOptions.of(client_id="waiter", run_dir=tmp_path / "run", subdir="unsplash", batch_size=8,
                             batch_wait_s=0.05)
        summary = Runner(source, store, TimedPredictor(), opts, Metrics(), StopControl(tmp_path / "ctl"),
                         http_client=http).run()
        limit_responses = emu.limit_responses
        tracked = dict(emu.tracked)
    store.close()
    # While the source waited, everything it had listed was published and tracked (>= 40 of 50 calls).
    assert sleep.first["ready"] == 1, sleep.first
    assert sleep.first["published"] >= 40, sleep.first
    # And then the run went on in the next windows and finished the feed.
    assert summary.published == 120 and not summary.stopped
    assert limit_responses == 0
    assert tracked == {pid: 1 for pid in tracked} and len(tracked) == 120
    assert clock() - 1_700_000_000.0 >= 2 * 3600
