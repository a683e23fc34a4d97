"""kill -9 at many moments, restart with the same client id: every input published exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

from e2e_utils import check_consistent, cli_cmd, cli_env, make_photos, read_rows, run_cli

from sharp_dataset_pipeline.stores.local import LocalStore

N = 96


def _published(store: Path) -> int:
    return len(read_rows(store)) if (store / "data").exists() else 0


def _kill_mid_work(proc: subprocess.Popen[bytes], store: Path, rng: random.Random) -> bool:
    """Wait until this process has published something, then kill it a random moment later."""
    before = _published(store)
    deadline = time.monotonic() + 30
    while proc.poll() is None and _published(store) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.4))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    return True


def test_kill9_at_random_moments_then_resume(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, N, seed=3, size=(320, 240))
    args = ("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}",
            "--range-size", "6", "--batch-size", "3", "--planar-resolution", "320")
    env = cli_env(CLIENT_ID="crashy", UPLOAD_WORKERS="1", DOWNLOAD_WORKERS="1")
    rng = random.Random(7)
    kills, progress = 0, []
    for attempt in range(16):
        proc = subprocess.Popen(cli_cmd(*args, "--run-id", f"r{attempt}"), cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kills += _kill_mid_work(proc, store, rng)
        proc.wait(timeout=60)
        if not (store / "data").exists():
            progress.append(0)
            continue
        # Visible state right after the kill: no row without its files (a stray file may exist).
        check_consistent(store, allow_stray=True)
        # After the store's crash repair (what every run does first): exactly consistent.
        repaired = LocalStore(store)
        repaired.open()
        repaired.close()
        progress.append(len(check_consistent(store)))
        if progress[-1] == N:
            break
    assert kills >= 10, (kills, progress)
    # The kills landed while work was going on, at many different points.
    assert len({n for n in progress if 0 < n < N}) >= 8, progress
    final = run_cli(tmp_path, *args, "--run-id", "final", CLIENT_ID="crashy")
    assert final.returncode == 0, final.stderr
    rows = check_consistent(store)
    assert len(rows) == N
    assert len({r["image_sha256"] for r in rows}) == N
