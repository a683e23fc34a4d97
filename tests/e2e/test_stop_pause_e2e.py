"""STOP and PAUSE files and SIGTERM behave as documented: drain, publish, release, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from e2e_utils import check_consistent, cli_cmd, cli_env, make_photos, read_rows, run_cli

from sharp_dataset_pipeline.stores.local import LocalStore


def _args(photos: Path, store: Path) -> tuple[str, ...]:
    return ("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}",
            "--range-size", "4", "--batch-size", "2", "--planar-resolution", "256")


def _wait_for(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _no_leases(store: Path, client: str) -> bool:
    ledger = LocalStore(store)
    ledger.open()
    try:
        return not [lease for lease in ledger.leases() if lease.owner == client]
    finally:
        ledger.close()


def test_pause_file_holds_intake_until_removed(tmp_path: Path) -> None:
    photos, store, control = tmp_path / "photos", tmp_path / "out", tmp_path / "control"
    make_photos(photos, 6, seed=6)
    control.mkdir()
    (control / "PAUSE").write_text("")
    proc = subprocess.Popen(cli_cmd(*_args(photos, store)), cwd=tmp_path,
                            env=cli_env(CONTROL_DIR=str(control)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)
    assert proc.poll() is None
    assert not read_rows(store) if (store / "data").exists() else True
    (control / "PAUSE").unlink()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "paused" in err
    assert len(check_consistent(store)) == 6


def test_stop_file_drains_then_resume_finishes(tmp_path: Path) -> None:
    photos, store, control = tmp_path / "photos", tmp_path / "out", tmp_path / "control"
    make_photos(photos, 40, seed=7, size=(320, 240))
    control.mkdir()
    env = cli_env(CONTROL_DIR=str(control), CLIENT_ID="stopper", DOWNLOAD_WORKERS="1", UPLOAD_WORKERS="1")
    proc = subprocess.Popen(cli_cmd(*_args(photos, store), "--summary-json", str(tmp_path / "s.json")),
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (store / "data").exists() and len(read_rows(store)) >= 2)
    (control / "STOP").write_text("")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert "STOP" in summary["stopped"]
    rows = check_consistent(store)
    assert summary["published"] == len(rows) < 40
    assert _no_leases(store, "stopper")
    blocked = run_cli(tmp_path, *_args(photos, store), CONTROL_DIR=str(control), CLIENT_ID="stopper")
    assert blocked.returncode == 2 and "STOP" in blocked.stderr
    (control / "STOP").unlink()
    resumed = run_cli(tmp_path, *_args(photos, store), CONTROL_DIR=str(control), CLIENT_ID="stopper")
    assert resumed.returncode == 0, resumed.stderr
    assert len(check_consistent(store)) == 40


def test_sigterm_drains_and_releases(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 40, seed=8, size=(320, 240))
    env = cli_env(CLIENT_ID="termed", DOWNLOAD_WORKERS="1", UPLOAD_WORKERS="1")
    proc = subprocess.Popen(cli_cmd(*_args(photos, store), "--summary-json", str(tmp_path / "s.json")),
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (store / "data").exists() and len(read_rows(store)) >= 2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stopped"] == "SIGTERM"
    assert summary["published"] == len(check_consistent(store))
    assert _no_leases(store, "termed")


def test_second_ctrl_c_aborts_and_leaves_the_store_consistent(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 60, seed=10, size=(320, 240))
    env = cli_env(CLIENT_ID="impatient", DOWNLOAD_WORKERS="1", UPLOAD_WORKERS="1")
    proc = subprocess.Popen(cli_cmd(*_args(photos, store)), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (store / "data").exists() and len(read_rows(store)) >= 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "aborting" in err
    rows = check_consistent(store)
    assert len(rows) < 60
    assert _no_leases(store, "impatient")


def test_sigterm_with_a_stuck_item_exits_at_the_drain_deadline_and_releases(tmp_path: Path) -> None:
    from emulators.files import FileServer, jpeg_bytes

    store = tmp_path / "out"
    with FileServer() as files:
        good = files.put("/good.jpg", jpeg_bytes(seed=61))
        stuck = files.put("/stuck.jpg", jpeg_bytes(seed=62))
        files.faults.trickle(2.0, path="/stuck.jpg", times=5)  # hours for the whole body
        manifest = tmp_path / "m.csv"
        manifest.write_text(f"id,url\ng1,{good}\ns1,{stuck}\n", encoding="utf-8")
        env = cli_env(CLIENT_ID="stuckclient", STOP_DRAIN_SECS="3", FETCH_TIMEOUT_SECS="3600")
        proc = subprocess.Popen(cli_cmd("run", "--source", f"manifest:{manifest}", "--predictor", "planar",
                                        "--store", f"local:{store}", "--batch-size", "1",
                                        "--summary-json", str(tmp_path / "s.json")),
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: files.hits("/stuck.jpg") >= 1 and store.joinpath("data").exists()
                      and len(read_rows(store)) == 1)
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            out, err = proc.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # Out by the deadline (3 s) plus the abort grace (3 s) and a margin, not after the trickle ends.
    assert took < 12, (took, err[-2000:])
    assert proc.returncode == 1, err[-3000:]
    assert "drain deadline passed" in out + err
    assert _no_leases(store, "stuckclient"), "the stuck unit's lease was kept"
    assert [r["id"] for r in read_rows(store)] == ["g1"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stop_cause"] == "drain_deadline" and "fetch-" in summary["stopped"]
