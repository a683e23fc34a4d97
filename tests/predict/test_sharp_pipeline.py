"""``sharp-dataset run --predictor sharp`` end to end with the stand-in ``sharp`` package.

Real CLI in a subprocess: folder source → in-process SHARP backend (batched, with an injected
out-of-memory limit and one image the network fails on) → post-process pool → local store.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e2e.e2e_utils import check_consistent, make_photos, run_cli
from sharp_dataset_pipeline.splat.ply import read_ply

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

STANDINS = Path(__file__).resolve().parents[1] / "standins"


def test_run_with_sharp_backend_publishes_and_isolates_failures(tmp_path: Path) -> None:
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
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 5, seed=4, size=(96, 64))
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(photos / "black.png")
    pythonpath = os.pathsep.join([str(STANDINS), os.environ.get("PYTHONPATH", "")])
    # Batches are what the fetch queue holds when the predictor asks (runner._predict_loop), so on a
    # loaded machine every pass could get <= 2 images and never meet the injected memory limit. The
    # stand-in's first pass waits until all 6 photos are fetched (one fetch worker: all but the last
    # are queued by then), so a pass of more than 2 images follows for certain.
    images = tmp_path / "runs" / "SP1" / "images"
    res = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "sharp", "--store",
                  f"local:{store}", "--summary-json", str(tmp_path / "summary.json"), "--run-id", "SP1",
                  PYTHONPATH=pythonpath, SHARP_CHECKPOINT_PATH=str(ckpt), SHARP_BATCH_SIZE="4",
                  SHARP_DEVICE="cpu", SHARP_STANDIN_MAX_BATCH="2", DOWNLOAD_WORKERS="1",
                  SHARP_STANDIN_HOLD_FIRST_PASS=f"{images}:6")
    assert res.returncode == 0, res.stderr + res.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["published"] == 5, summary
    assert summary["failed"] == {"predict_error": 1}, summary
    rows = check_consistent(store)
    assert len(rows) == 5
    depths = set()
    for row in rows:
        assert row["predictor"] == "sharp" and row["model_version"] == "sharp_e2e"
        g = read_ply(store / row["ply_path"])
        assert g.count == row["num_gaussians"] == 128
        assert (g.width, g.height) == (row["width"], row["height"]) == (96, 64)
        assert g.focal_px == pytest.approx(row["focal_px"], rel=1e-6)
        depths.add(round(float(g.vertices[:, 2].mean()), 5))
    assert len(depths) == 5  # every photo got its own prediction
    # A pass of 3 or 4 images (which one depends on how the first batch was formed) hit the limit, and
    # the backend halved its batch for the rest of the run.
    shrunk = re.findall(r"out of device memory with (\d+) images per pass; using (\d+) from now on",
                        res.stderr + res.stdout)
    assert len(shrunk) == 1 and int(shrunk[0][0]) > 2 and int(shrunk[0][1]) == int(shrunk[0][0]) // 2, shrunk
