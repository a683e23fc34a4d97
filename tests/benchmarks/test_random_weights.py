"""Untrained SHARP weights are for timing only: ``sharp-dataset run`` refuses them, the benchmark's
timing path (benchmarks/timing_run.py) admits them only into a new local folder, and the predictor
labels everything it makes with them.

The refusals go through the real CLI and the real timing script (subprocesses) with the stand-in
``sharp`` package (tests/standins), so the same command without the guard would publish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e2e.e2e_utils import cli_env, make_photos, read_rows, run_cli
from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.records import FetchedImage, Item

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "standins"
TIMING_RUN = ROOT / "benchmarks" / "timing_run.py"


def _standin_env(**extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join([str(STANDINS), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": pythonpath, "SHARP_DEVICE": "cpu", "PUBLISH_FORMATS": "ply", **extra}


def _timing_run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TIMING_RUN), *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=300)


def test_run_refuses_random_weights(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 2, seed=1)
    res = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "sharp", "--store",
                  f"local:{store}", "--summary-json", str(tmp_path / "s.json"),
                  **_standin_env(SHARP_RANDOM_WEIGHTS="1"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "SHARP_RANDOM_WEIGHTS" in res.stderr and "timing only" in res.stderr
    assert "never published by sharp-dataset run" in res.stderr
    assert not store.exists() and not (tmp_path / "s.json").exists()  # refused before any work


def test_timing_path_runs_random_weights_into_a_new_local_folder_labelled(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    photos, store = tmp_path / "photos", tmp_path / "timing_store"
    make_photos(photos, 3, seed=2)
    res = _timing_run(tmp_path, "--source", f"folder:{photos}", "--store", f"local:{store}",
                      "--summary-json", str(tmp_path / "s.json"), **_standin_env(SHARP_RANDOM_WEIGHTS="1"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((tmp_path / "s.json").read_text())["published"] == 3
    rows = read_rows(store)
    assert len(rows) == 3
    assert {r["model_version"] for r in rows} == {"random-weights-untrained"}
    assert "RANDOM (untrained) weights" in res.stderr + res.stdout


@pytest.mark.parametrize("store_kind", ["existing", "hub"])
def test_timing_path_refuses_a_store_that_could_be_a_dataset(tmp_path: Path, store_kind: str) -> None:
    pytest.importorskip("torch")
    photos = tmp_path / "photos"
    make_photos(photos, 1, seed=3)
    if store_kind == "existing":
        existing = tmp_path / "my-dataset"
        existing.mkdir()
        store, why = f"local:{existing}", "only into a new folder"
    else:
        store, why = "hf:someone/splats", "need --predictor sharp and a local store"
    res = _timing_run(tmp_path, "--source", f"folder:{photos}", "--store", store,
                      "--summary-json", str(tmp_path / "s.json"), **_standin_env(SHARP_RANDOM_WEIGHTS="1"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert why in res.stderr
    if store_kind == "existing":
        assert list((tmp_path / "my-dataset").iterdir()) == []


@pytest.fixture
def standin_models(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("torch")
    for name in [n for n in sys.modules if n == "sharp" or n.startswith("sharp.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(STANDINS))
    import sharp.models as models

    models.CREATED.clear()
    yield models
    for name in [n for n in sys.modules if n == "sharp" or n.startswith("sharp.")]:
        del sys.modules[name]


def test_predictor_with_random_weights_loads_no_checkpoint(standin_models, tmp_path: Path) -> None:
    from sharp_dataset_pipeline.predict.sharp import RANDOM_WEIGHTS_VERSION, SharpOptions, SharpPredictor

    pred = SharpPredictor(SharpOptions(checkpoint_path=None, device="cpu", batch_size=2, random_weights=True))
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    img = FetchedImage(item=Item(id="a", source="t", unit="u", offset=0), original_path=tmp_path / "a.jpg",
                       ext="jpg", rgb=rgb, width=30, height=20, focal_px=40.0, focal_source="t", size=0, sha256="")
    out = pred.predict([img])
    assert pred.model_version == RANDOM_WEIGHTS_VERSION == "random-weights-untrained"
    assert out[0].to_gaussians().count == 128
    built = standin_models.CREATED[-1]
    assert built.state_dict_loads == 0  # the untrained initial weights, no checkpoint, no download


def test_predictor_refuses_random_weights_with_a_checkpoint() -> None:
    from sharp_dataset_pipeline.predict.sharp import SharpOptions, SharpPredictor

    with pytest.raises(ConfigError, match="exclude each other"):
        SharpPredictor(SharpOptions(checkpoint_path="/some/sharp.pt", random_weights=True))
