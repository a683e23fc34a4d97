"""A stop while the Hub's commit quota is spent: the real CLI against the loopback Hub.

The Hub answers a spent commit quota with 429 and "You can retry this action in about 1 hour" (here
without a ``Retry-After`` header, as some answers come). A run waiting for that hour must still
obey a stop at once (SIGTERM, or a STOP file): it ends within seconds with exit 3 and the time the
quota reopens, publishes nothing half-way, and a rerun once the quota allows publishes every photo
exactly once, taking its own leftover lease back at once (same CLIENT_ID).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from e2e_utils import cli_cmd, cli_env, make_photos

from emulators.hub import HubEmulator, HubFaults, index_rows

REPO = "night/splats"
TOKEN = "hf_quotastopcanary0123456789"


def _run(photos: Path, hub: HubEmulator, cwd: Path, run_id: str) -> subprocess.Popen[str]:
    env = cli_env(CLIENT_ID="volunteer", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1",
                  HF_HUB_DISABLE_TELEMETRY="1", PLANAR_RESOLUTION="48")
    return subprocess.Popen(cli_cmd("run", "--source", f"folder:{photos}", "--predictor", "planar",
                                    "--store", f"hf:{REPO}", "--run-id", run_id),
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_429(hub: HubEmulator, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while hub.stats["commit_429"] == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the commit quota"
        time.sleep(0.1)
    time.sleep(1.0)  # the client has read the answer and is waiting for the quota now


@pytest.mark.parametrize("how", ["sigterm", "stop_file"])
def test_a_stop_during_an_hour_long_quota_wait_ends_the_run_at_once(tmp_path: Path, how: str) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 6)
    # Two commits go through (the dataset card, the first lease); the publish step gets the 429.
    with HubEmulator(faults=HubFaults(quota_commits=2, quota_window_s=3600.0, quota_retry_after=False)) as hub:
        proc = _run(photos, hub, tmp_path, "first")
        _wait_for_429(hub, proc)
        asked = time.monotonic()
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            (tmp_path / "runs" / "first" / "STOP").touch()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - asked
        assert took < 20.0, f"the stop took {took:.0f}s"
        assert proc.returncode == 3, out + err[-3000:]
        assert "the window reopens at" in out
        assert "waits 3600s for the quota to reopen" in err
        assert "Traceback" not in err and TOKEN not in err + out
        assert index_rows(hub.files(REPO)) == []  # nothing was published half-way
        applied = len(hub.history(REPO))

        # The hour has passed: the rerun publishes every photo once (no new card, own lease back).
        hub.set_faults(HubFaults())
        rerun = _run(photos, hub, tmp_path, "second")
        out, err = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, out + err[-3000:]
        ids = Counter(r["id"] for r in index_rows(hub.files(REPO)))
        assert len(ids) == 6 and set(ids.values()) == {1}
        assert "leased elsewhere" not in out
        assert len(hub.history(REPO)) > applied
