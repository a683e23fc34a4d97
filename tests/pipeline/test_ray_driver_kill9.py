"""The Ray driver killed with -9 mid-run, then restarted: it resumes from the store like the thread runner."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from e2e.e2e_utils import check_consistent, cli_cmd, cli_env, make_photos, run_cli
from sharp_dataset_pipeline.stores.local import LocalStore

pytest.importorskip("ray")  # CI installs the [ray] extra, so this is not skipped there

N = 16


def _units_done(store: Path) -> int:
    ledger = store / ".coord" / "ledger.sqlite3"
    if not ledger.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM units_done").fetchone()[0]
    except sqlite3.OperationalError:  # the run is still creating the ledger
        return 0


def test_driver_kill9_then_restart_publishes_each_photo_once(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, N, seed=5)
    args = ("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}",
            "--executor", "ray", "--range-size", "4", "--batch-size", "2", "--planar-resolution", "32")
    env = cli_env(CLIENT_ID="crashy", RAY_NUM_GPUS="1", SHARP_BATCH_SIZE="2")
    proc = subprocess.Popen(cli_cmd(*args, "--run-id", "first"), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _units_done(store) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the first run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # Ray's agent processes outlive a killed driver (as on a crashed node): end them, they are ours.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    # What survived the kill, after the crash repair every run does first (a half-written batch goes).
    repaired = LocalStore(store)
    repaired.open()
    repaired.close()
    before = len(check_consistent(store))
    assert 0 < before < N
    final = run_cli(tmp_path, *args, "--run-id", "second", "--summary-json", str(tmp_path / "s.json"),
                    CLIENT_ID="crashy", RAY_NUM_GPUS="1", SHARP_BATCH_SIZE="2")
    assert final.returncode == 0, final.stderr[-3000:]
    rows = check_consistent(store)
    assert len(rows) == len({r["id"] for r in rows}) == N
    assert len({r["image_sha256"] for r in rows}) == N
    # The restart did only what was left: nothing it published was there already.
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["published"], summary["already_published"]) == (N - before, 0)
    assert summary["units"].get("units_already_done", 0) >= 1  # the killed run's finished units
    assert "ray: 1 predictor actor(s) on 1 GPU(s), busy " in final.stdout
    assert "stage busy time: fetch " in final.stdout
