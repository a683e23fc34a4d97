"""An item counts as done only for the model that made it; ``run --redo`` replaces on purpose.

Real CLI in subprocesses on one local store: the demo's planar predictor first, then
``--predictor sharp`` (the stand-in ``sharp`` package) without and with ``--redo model-changed``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from e2e.e2e_utils import check_consistent, make_photos, run_cli

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

STANDINS = Path(__file__).resolve().parents[1] / "standins"


def _checkpoint(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(STANDINS))
    try:
        spec = importlib.util.find_spec("sharp.models")
        assert spec is not None and "standins" in str(spec.origin)
        from sharp.models import PredictorParams, RGBGaussianPredictor

        ckpt = tmp_path / "sharp_e2e.pt"
        torch.save(RGBGaussianPredictor(PredictorParams(seed=3)).state_dict(), ckpt)
    finally:
        sys.path.remove(str(STANDINS))
        for name in [n for n in sys.modules if n == "sharp" or n.startswith("sharp.")]:
            del sys.modules[name]
    return ckpt


def _index_ids(store: Path) -> Counter[str]:
    ids: Counter[str] = Counter()
    for path in (store / "data").glob("train*.jsonl"):
        ids.update(json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip())
    return ids


def test_planar_output_never_satisfies_a_sharp_run_until_redo_replaces_it(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 4, seed=7, size=(96, 64))
    common = ("--source", f"folder:{photos}", "--store", f"local:{store}")
    demo = run_cli(tmp_path, "run", *common, "--predictor", "planar")
    assert demo.returncode == 0, demo.stderr + demo.stdout
    planar_plys = {r["id"]: r["ply_sha256"] for r in check_consistent(store)}
    assert len(planar_plys) == 4

    sharp_env = {"PYTHONPATH": os.pathsep.join([str(STANDINS), os.environ.get("PYTHONPATH", "")]),
                 "SHARP_CHECKPOINT_PATH": str(ckpt), "SHARP_DEVICE": "cpu"}
    summary = tmp_path / "s1.json"
    plain = run_cli(tmp_path, "run", *common, "--predictor", "sharp", "--summary-json", str(summary), **sharp_env)
    assert plain.returncode == 0, plain.stderr + plain.stdout
    assert json.loads(summary.read_text())["published"] == 0
    # It says what it left alone and how to replace it.
    assert "4 items were published by planar" in plain.stdout, plain.stdout
    assert "pass --redo model-changed to replace them" in plain.stdout

    summary = tmp_path / "s2.json"
    redo = run_cli(tmp_path, "run", *common, "--predictor", "sharp", "--redo", "model-changed",
                   "--summary-json", str(summary), **sharp_env)
    assert redo.returncode == 0, redo.stderr + redo.stdout
    assert json.loads(summary.read_text())["published"] == 4
    rows = check_consistent(store)  # every row's files exist with its sizes and hashes, no stray file
    assert {r["predictor"] for r in rows} == {"sharp"} and {r["model_version"] for r in rows} == {"sharp_e2e"}
    assert _index_ids(store) == Counter({i: 1 for i in planar_plys})  # exactly one row per id
    assert all(r["ply_sha256"] != planar_plys[r["id"]] for r in rows)  # the files were replaced

    again = run_cli(tmp_path, "run", *common, "--predictor", "sharp", "--redo", "model-changed",
                    "--summary-json", str(summary), **sharp_env)
    assert again.returncode == 0, again.stderr + again.stdout
    assert json.loads(summary.read_text())["published"] == 0  # done for this model now
    status = run_cli(tmp_path, "status", "--store", f"local:{store}", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["published"] == 4


def test_redo_failed_and_all_reprocess_on_purpose(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 3, seed=9, size=(64, 48))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    common = ("--source", f"folder:{photos}", "--store", f"local:{store}", "--predictor", "planar")
    summary = tmp_path / "s.json"

    def run(*extra: str) -> dict:
        res = run_cli(tmp_path, "run", *common, "--summary-json", str(summary), *extra)
        assert res.returncode in (0, 1), res.stderr + res.stdout
        return json.loads(summary.read_text())

    first = run()
    assert first["published"] == 3 and sum(first["failed"].values()) == 1
    plain = run()
    assert plain["published"] == 0 and not plain["failed"] and plain["units"]["units_already_done"] == 1
    failed = run("--redo", "failed")  # the broken photo is tried again (and fails again); the rest stay
    assert failed["published"] == 0 and sum(failed["failed"].values()) == 1
    assert "failed_before" not in failed["skipped"] and failed["skipped"].get("already_published") == 3
    everything = run("--redo", "all")
    assert everything["published"] == 3  # replaced in place
    assert _index_ids(store) == Counter({r["id"]: 1 for r in check_consistent(store)})
    assert len(_index_ids(store)) == 3


def test_redo_model_changed_on_the_hub_store(tmp_path: Path) -> None:
    from emulators.hub import HubEmulator, index_rows

    ckpt = _checkpoint(tmp_path)
    photos = tmp_path / "photos"
    make_photos(photos, 3, seed=5, size=(96, 64))
    with HubEmulator() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_redotesttoken0123456789", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        common = ("--source", f"folder:{photos}", "--store", "hf:me/splats")
        sharp_env = {**env, "PYTHONPATH": os.pathsep.join([str(STANDINS), os.environ.get("PYTHONPATH", "")]),
                     "SHARP_CHECKPOINT_PATH": str(ckpt), "SHARP_DEVICE": "cpu"}
        demo = run_cli(tmp_path, "run", *common, "--predictor", "planar", **env)
        assert demo.returncode == 0, demo.stderr + demo.stdout
        plain = run_cli(tmp_path, "run", *common, "--predictor", "sharp", **sharp_env)
        assert plain.returncode == 0, plain.stderr + plain.stdout
        assert "3 items were published by planar" in plain.stdout, plain.stdout
        assert {r["predictor"] for r in index_rows(hub.files("me/splats"))} == {"planar"}
        redo = run_cli(tmp_path, "run", *common, "--predictor", "sharp", "--redo", "model-changed", **sharp_env)
        assert redo.returncode == 0, redo.stderr + redo.stdout
        files = hub.files("me/splats")
        rows = index_rows(files)
        assert Counter(r["id"] for r in rows) == Counter({r["id"]: 1 for r in rows}) and len(rows) == 3
        assert {r["predictor"] for r in rows} == {"sharp"}
        for row in rows:
            assert len(files[row["ply_path"]]) == row["ply_size"]
