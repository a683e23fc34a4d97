"""The real CLI (``sharp-dataset run --store hf:REPO``) against the loopback Hub, several processes.

- Many clients: 4 processes, 400 photos, every fault switched on (overlapping-commit 409s, a commit
  quota with 429 + Retry-After, 5xx and dropped connections after the commit was applied, a lagging
  head, slow responses): every item published exactly once, every published file referenced by
  exactly one index row, no row pointing at a missing file, no lease left by a finished client.
- SIGKILL mid-batch: the dead client's units are skipped while its leases are valid, taken over by
  another client once they expire, and taken back at once by the same client id on restart.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from e2e_utils import cli_cmd, cli_env, make_photos

from emulators.hub import HubEmulator, HubFaults, index_rows

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

REPO = "crowd/splats"
TOKEN = "hf_e2ecanarytoken0123456789"


def _env(hub: HubEmulator, client: str, **extra: str) -> dict[str, str]:
    return cli_env(CLIENT_ID=client, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1",
                   HF_HUB_DISABLE_TELEMETRY="1", **extra)


def _args(photos: Path, run_id: str, *extra: str) -> list[str]:
    return cli_cmd("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"hf:{REPO}",
                   "--run-id", run_id, *extra)


def _leases(files: dict[str, bytes]) -> list[dict]:
    return [json.loads(v) for p, v in files.items() if p.startswith(".coord/leases/")]


def _check_repo(hub: HubEmulator, expected: int) -> list[dict]:
    files = hub.files(REPO)
    rows = index_rows(files)
    ids = Counter(r["id"] for r in rows)
    assert len(ids) == expected, f"{len(ids)} of {expected} items published"
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
    referenced: Counter[str] = Counter()
    for row in rows:
        entries = [(row[f"{kind}_path"], row[f"{kind}_size"], row[f"{kind}_sha256"]) for kind in ("image", "ply")]
        entries += [(e["path"], e["size"], e["sha256"]) for e in json.loads(row["extra_files"])]
        for path, size, digest in entries:
            assert path in files, f"row {row['id']} points at missing {path}"
            assert len(files[path]) == size
            assert hashlib.sha256(files[path]).hexdigest() == digest
            referenced[path] += 1
    item_files = [p for p in files if not p.startswith((".coord/", "data/")) and p not in
                  ("README.md", ".gitattributes")]
    assert sorted(item_files) == sorted(referenced), "a published file has no index row"
    assert max(referenced.values()) == 1
    for data in files.values():
        assert TOKEN.encode() not in data
    return rows


def test_four_clients_with_every_fault_publish_each_item_once(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 400, seed=11, size=(40, 30))
    faults = HubFaults(seed=5, overlap_409=True, commit_hold_s=0.02, random_409_rate=0.05,
                       quota_commits=10, quota_window_s=4.0, error_after_commit_rate=0.06,
                       drop_after_commit_rate=0.04, lag_reads=1, delay_s=0.002)
    with HubEmulator(faults=faults) as hub:
        procs = [
            subprocess.Popen(_args(photos, f"r{i}", "--range-size", "10", "--batch-size", "8",
                                   "--planar-resolution", "40"),
                             cwd=tmp_path, env=_env(hub, f"client{i}"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for i in range(4)
        ]
        outputs = [p.communicate(timeout=540) for p in procs]
        for p, (_, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err[-3000:]
            assert TOKEN not in err
        rows = _check_repo(hub, 400)
        assert len({r["client_id"] for r in rows}) >= 2, "the work was not shared"
        assert _leases(hub.files(REPO)) == [], "a finished client left a lease behind"
        stats = hub.stats
        # Every fault really happened during the run.
        assert stats["commit_409_overlap"] + stats["status_409"] > 0
        assert stats["commit_429"] > 0
        assert stats["commit_500_after_apply"] > 0 and stats["commit_dropped_after_apply"] > 0
        assert stats["lagged_head_reads"] > 0


def _kill_after_first_publish(proc: subprocess.Popen, hub: HubEmulator) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if REPO in {k[1] for k in hub.repos} and index_rows(hub.files(REPO)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the client finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _held_units(hub: HubEmulator, owner: str) -> dict[str, float]:
    done = {json.loads(v)["unit"] for p, v in hub.files(REPO).items() if p.startswith(".coord/done/")}
    return {lease["unit"]: lease["expires_at"] for lease in _leases(hub.files(REPO))
            if lease["owner"] == owner and lease["unit"] not in done}


def _slow_run(photos: Path, run_id: str) -> list[str]:
    return _args(photos, run_id, "--range-size", "4", "--batch-size", "2", "--planar-resolution", "64")


def test_sigkill_units_are_taken_over_after_expiry_and_back_at_once(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 48, seed=12, size=(64, 48))
    with HubEmulator(faults=HubFaults(delay_s=0.03)) as hub:
        ttl = "15"
        crashed = subprocess.Popen(_slow_run(photos, "a1"), cwd=tmp_path,
                                   env=_env(hub, "alpha", RANGE_LOCK_STALE_SECS=ttl),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _kill_after_first_publish(crashed, hub)
        held = _held_units(hub, "alpha")
        assert held, "the killed client held no lease"
        published_before = {r["id"] for r in index_rows(hub.files(REPO))}

        # Another client, while alpha's leases are valid: it must leave alpha's units alone.
        hub.set_faults(HubFaults())
        beta = subprocess.run(_slow_run(photos, "b1"), cwd=tmp_path, env=_env(hub, "beta", RANGE_LOCK_STALE_SECS=ttl),
                              capture_output=True, text=True, timeout=300)
        assert beta.returncode == 0, beta.stderr[-3000:]
        assert time.time() < min(held.values()), "beta ran past alpha's leases: raise the ttl"
        beta_units = {r["unit"] for r in index_rows(hub.files(REPO)) if r["client_id"] == "beta"}
        assert beta_units, "beta did nothing"
        assert not beta_units & set(held), "a validly leased unit was processed by another client"
        # After expiry, beta takes the dead client's units over.
        time.sleep(max(0.0, max(held.values()) - time.time() + 0.5))
        beta2 = subprocess.run(_slow_run(photos, "b2"), cwd=tmp_path, env=_env(hub, "beta", RANGE_LOCK_STALE_SECS=ttl),
                               capture_output=True, text=True, timeout=300)
        assert beta2.returncode == 0, beta2.stderr[-3000:]
        rows = _check_repo(hub, 48)
        taken_over = {r["unit"] for r in rows if r["client_id"] == "beta" and r["id"] not in published_before}
        assert set(held) <= taken_over | {r["unit"] for r in rows if r["id"] in published_before}
        assert _leases(hub.files(REPO)) == []


def test_sigkill_then_restart_with_the_same_client_id_resumes_at_once(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 24, seed=13, size=(64, 48))
    with HubEmulator(faults=HubFaults(delay_s=0.03)) as hub:
        env = _env(hub, "gamma", RANGE_LOCK_STALE_SECS="3600")
        crashed = subprocess.Popen(_slow_run(photos, "g1"), cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _kill_after_first_publish(crashed, hub)
        held = _held_units(hub, "gamma")
        assert held and min(held.values()) > time.time() + 3000  # valid for an hour yet
        hub.set_faults(HubFaults())
        again = subprocess.run(_slow_run(photos, "g2"), cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        rows = _check_repo(hub, 24)
        assert {r["unit"] for r in rows} >= set(held)
        assert _leases(hub.files(REPO)) == []
