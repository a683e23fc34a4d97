"""The ``sharp-cli`` backend against an executable stand-in ``sharp`` command (tests/standins/bin).

The stand-in reads a folder the way ``sharp predict`` does and writes ``<stem>.ply`` in SHARP's
layout; a fake ``conda`` (tests/standins/fake_conda) records its arguments and runs the rest.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.predict.base import ReadyGaussians
from sharp_dataset_pipeline.predict.sharp_cli import SharpCliPredictor, redact, sharp_cli_available
from sharp_dataset_pipeline.records import Failure, FetchedImage, Item

STANDINS = Path(__file__).resolve().parents[1] / "standins"
BIN = STANDINS / "bin"
FAKE_CONDA = STANDINS / "fake_conda"
FAKE_TOKEN = "hf_" + "Q" * 30


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in ``sharp`` on PATH; returns the stand-in's JSONL log path."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SHARP_STANDIN_PYTHON", sys.executable)
    log = tmp_path / "sharp_calls.jsonl"
    monkeypatch.setenv("SHARP_STANDIN_LOG", str(log))
    for name in ("SHARP_STANDIN_SLEEP", "SHARP_STANDIN_FAIL_AFTER", "SHARP_STANDIN_CORRUPT"):
        monkeypatch.delenv(name, raising=False)
    return log


def photo(folder: Path, item_id: str, size: tuple[int, int], seed: int, *, focal35: int = 0,
          mode: str = "RGB") -> FetchedImage:
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    if focal35:
        exif.get_ifd(0x8769)[0xA405] = focal35
    path = folder / f"{seed}-original.jpg"
    (img.convert("CMYK") if mode == "CMYK" else img).save(path, format="JPEG", quality=95, exif=exif)
    item = Item(id=item_id, source="test", unit="u0", offset=seed)
    return FetchedImage(item=item, original_path=path, ext="jpg", rgb=rgb, width=w, height=h,
                        focal_px=1000.0, focal_source="test", size=path.stat().st_size, sha256="")


def predictor(tmp_path: Path, **overrides: object) -> SharpCliPredictor:
    kwargs: dict[str, object] = dict(conda_env=None, ml_sharp_dir=None, device="cpu", verbose=False,
                                     input_dir=None, work_dir=tmp_path / "work", timeout_s=120.0, batch_size=4)
    kwargs.update(overrides)
    return SharpCliPredictor(**kwargs)  # type: ignore[arg-type]


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def upstream_focal(f35: float, w: int, h: int) -> float:
    return f35 * math.hypot(w, h) / math.hypot(36, 24)


def test_one_command_per_batch_outputs_mapped_by_stem(env: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    images = [photo(src, "a", (60, 40), 1, focal35=50), photo(src, "x/y z", (30, 70), 2),
              photo(src, "a", (64, 64), 3, focal35=24)]  # a repeated id still gets its own stem
    ml_dir = tmp_path / "ml-sharp"
    ml_dir.mkdir()
    p = predictor(tmp_path, ml_sharp_dir=str(ml_dir), input_dir=str(tmp_path / "inputs"), verbose=True)
    results = p.predict(images)
    assert all(isinstance(r, ReadyGaussians) for r in results)
    for img, res, f35 in zip(images, results, (50, 30, 24), strict=True):
        g = res.to_gaussians()
        assert (g.width, g.height, g.count) == (img.width, img.height, 128)
        assert g.focal_px == pytest.approx(upstream_focal(f35, img.width, img.height), rel=1e-6)
    (call,) = calls(env)
    argv = call["argv"]
    assert argv[:2] == ["predict", "-i"] and argv[3] == "-o" and argv[5:] == ["--device", "cpu", "-v"]
    assert Path(argv[2]).parent.parent == tmp_path / "inputs"  # SHARP_INPUT_DIR holds the batch folder
    assert Path(call["cwd"]) == ml_dir
    assert sorted(call["inputs"]) == ["000-a.jpg", "001-x_y_z.jpg", "002-a.jpg"]
    assert not any(Path(tmp_path / "inputs").iterdir()) and not any((tmp_path / "work").iterdir())
    p.predict(images[:1])
    assert len(calls(env)) == 2
    assert p.model_version == "sharp_2572gikvuh" and p.name == "sharp-cli"


def test_images_sharp_would_misread_are_staged_as_rgb_png(env: Path, tmp_path: Path) -> None:
    images = [photo(tmp_path / "src", "rgb", (40, 30), 1, focal35=35),
              photo(tmp_path / "src", "cmyk", (40, 30), 2, focal35=35, mode="CMYK")]
    results = predictor(tmp_path).predict(images)
    assert sorted(calls(env)[0]["inputs"]) == ["000-rgb.jpg", "001-cmyk.png"]
    # The linked original keeps its EXIF focal length; the re-encoded PNG gets upstream's 30 mm.
    assert results[0].to_gaussians().focal_px == pytest.approx(upstream_focal(35, 40, 30), rel=1e-6)
    assert results[1].to_gaussians().focal_px == pytest.approx(upstream_focal(30, 40, 30), rel=1e-6)


def test_timeout_kills_the_command_and_fails_the_batch(env: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARP_STANDIN_SLEEP", "300")
    images = [photo(tmp_path / "src", "a", (40, 30), 1), photo(tmp_path / "src", "b", (40, 30), 2)]
    results = predictor(tmp_path, timeout_s=1.0).predict(images)
    assert [r.reason for r in results] == ["sharp_cli_timeout"] * 2
    assert all(isinstance(r, Failure) and r.transient for r in results)
    assert "ran past 1 s" in results[0].detail


def test_non_zero_exit_keeps_finished_outputs_and_explains_the_rest(env: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("SHARP_STANDIN_FAIL_AFTER", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    images = [photo(tmp_path / "src", "first", (40, 30), 1), photo(tmp_path / "src", f"t-{FAKE_TOKEN}", (40, 30), 2)]
    results = predictor(tmp_path).predict(images)
    assert isinstance(results[0], ReadyGaussians)
    fail = results[1]
    assert isinstance(fail, Failure) and fail.reason == "sharp_cli_failed" and fail.transient
    assert "exited 1" in fail.detail and "RuntimeError: stand-in failure" in fail.detail
    assert FAKE_TOKEN not in fail.detail and "***" in fail.detail
    assert "HF_TOKEN" not in calls(env)[0]["env_names"]  # the child never sees secrets


def test_invalid_output_is_a_failure(env: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHARP_STANDIN_CORRUPT", "1")
    (res,) = predictor(tmp_path).predict([photo(tmp_path / "src", "a", (40, 30), 1)])
    assert isinstance(res, Failure) and res.reason == "sharp_cli_bad_output" and "truncated" in res.detail


def test_conda_wrapping(env: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKE_CONDA}{os.pathsep}{os.environ['PATH']}")
    conda_log = tmp_path / "conda.log"
    monkeypatch.setenv("FAKE_CONDA_LOG", str(conda_log))
    assert sharp_cli_available(conda_env="sharp-env")
    p = predictor(tmp_path, conda_env="sharp-env", device="cuda:1")
    results = p.predict([photo(tmp_path / "src", "a", (40, 30), 1)])
    assert isinstance(results[0], ReadyGaussians)
    (line,) = conda_log.read_text().splitlines()
    words = line.split()
    assert words[:5] == ["run", "-n", "sharp-env", "sharp", "predict"]
    assert words[-2:] == ["--device", "cuda:1"]
    assert calls(env)[0]["argv"][0] == "predict"


def test_conda_env_without_conda_runs_sharp_directly(env: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    if shutil.which("conda"):
        pytest.skip("a real conda is on PATH here")
    p = predictor(tmp_path, conda_env="sharp-env")
    assert "no conda command" in caplog.text
    assert isinstance(p.predict([photo(tmp_path / "src", "a", (40, 30), 1)])[0], ReadyGaussians)


def test_nothing_to_run_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert not sharp_cli_available() and not sharp_cli_available(conda_env="sharp")
    with pytest.raises(ConfigError, match="not on PATH"):
        predictor(tmp_path)


def test_bad_settings_are_config_errors(env: Path, tmp_path: Path) -> None:
    assert sharp_cli_available()
    with pytest.raises(ConfigError, match="ML_SHARP_DIR"):
        predictor(tmp_path, ml_sharp_dir=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="timeout"):
        predictor(tmp_path, timeout_s=0)


def test_redact_masks_tokens_and_secret_env_values(monkeypatch) -> None:
    monkeypatch.setenv("UNSPLASH_ACCESS_KEY", "unsplash-secret-value")
    text = f"token {FAKE_TOKEN} key unsplash-secret-value Authorization: Bearer abc.def-123456"
    out = redact(text)
    assert FAKE_TOKEN not in out and "unsplash-secret-value" not in out and "abc.def-123456" not in out


def test_the_cli_passes_sharp_checkpoint_path_to_sharp_predict(env: Path, tmp_path: Path) -> None:
    """Through the real CLI: ``SHARP_CHECKPOINT_PATH`` reaches ``sharp predict -c`` and names the model."""
    from e2e.e2e_utils import make_photos, read_rows, run_cli

    make_photos(tmp_path / "photos", 2, seed=5)
    ckpt = tmp_path / "models" / "my_finetune.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not a real checkpoint; the stand-in does not read it")
    done = run_cli(tmp_path, "run", "--source", "folder:photos", "--predictor", "sharp-cli", "--store", "local:out",
                   "--run-id", "r1", SHARP_CHECKPOINT_PATH=str(ckpt), SHARP_DEVICE="cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    argvs = [c["argv"] for c in calls(env)]
    assert argvs and all(a[a.index("-c") + 1] == str(ckpt) for a in argvs if "predict" in a), argvs
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 2 and {r["model_version"] for r in rows} == {"my_finetune"}


def test_a_missing_checkpoint_is_a_config_error(env: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SHARP_CHECKPOINT_PATH"):
        predictor(tmp_path, checkpoint_path=str(tmp_path / "nowhere.pt"))
