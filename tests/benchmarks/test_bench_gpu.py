"""benchmarks/bench_gpu.py end to end on the CPU: the stand-in ``sharp`` package for our runs, the
stand-in ``sharp`` executable (tests/standins/bin) for upstream's CLI, tiny photos, 2 images.

It checks that the script runs every measurement and writes its JSON with every field, so it is
known to work before anyone has a GPU; the timings themselves are not checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STANDINS = ROOT / "tests" / "standins"
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"

REPORT_FIELDS = {"schema", "created", "random_weights", "label", "weights", "images", "photos", "photo_size",
                 "device", "formats", "batch_sizes", "precisions", "host", "upstream", "ours", "best", "goal",
                 "summary"}
HOST_FIELDS = {"python", "platform", "cpu_count", "torch", "sharp_package", "sharp_cli", "gpu_name"}
UPSTREAM_FIELDS = {"available", "reason", "command", "returncode", "wall_s", "images_out", "images_per_s", "gpu"}
OURS_FIELDS = {"batch_size", "precision", "command", "returncode", "wall_s", "published", "failed", "images_per_s",
               "run_images_per_s", "run_elapsed_s", "predictor_busy_fraction", "stage_busy_s",
               "stage_s_per_image", "gpu", "ratio_vs_upstream", "error"}
GPU_FIELDS = {"available", "reason", "gpu_name", "busy_fraction", "busy_fraction_active", "peak_mem_mib",
              "baseline_mem_mib", "samples"}
STAGES = {"fetch", "predict", "postprocess", "publish"}


def _run(tmp_path: Path, path_dirs: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHARP_CHECKPOINT_PATH", "SHARP_RANDOM_WEIGHTS")}
    env.update({"PYTHONPATH": os.pathsep.join([str(STANDINS), os.environ.get("PYTHONPATH", "")]),
                "PATH": os.pathsep.join(path_dirs), "SHARP_STANDIN_PYTHON": sys.executable,
                "SHARP_STANDIN_LOG": str(tmp_path / "upstream_calls.jsonl")})
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=280)


def _system_path_without_sharp() -> list[str]:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and "standins" not in d]
    return [d for d in dirs if shutil.which("sharp", path=d) is None]


def _check_gpu(gpu: dict) -> None:
    assert set(gpu) == GPU_FIELDS
    if not gpu["available"]:  # no GPU: every figure is n/a (null), with the reason
        assert gpu["reason"] and gpu["busy_fraction"] is None and gpu["peak_mem_mib"] is None
    else:
        assert 0.0 <= gpu["busy_fraction"] <= 1.0 and gpu["peak_mem_mib"] > 0


def test_bench_gpu_end_to_end_with_standins(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "gpu.json"
    res = _run(tmp_path, [str(STANDINS / "bin"), *_system_path_without_sharp()],
               "--images", "2", "--size", "40", "--batch-sizes", "1,2", "--precision", "fp32,bf16",
               "--device", "cpu", "--random-weights", "--json", str(out), "--work-dir", str(tmp_path / "work"))
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    assert set(report) == REPORT_FIELDS and set(report["host"]) == HOST_FIELDS
    assert report["random_weights"] is True and "RANDOM WEIGHTS" in report["label"]
    assert report["images"] == 2 and report["photo_size"] == "40x40"

    up = report["upstream"]
    assert set(up) == UPSTREAM_FIELDS and up["available"] and up["reason"] == ""
    assert up["returncode"] == 0 and up["images_out"] == 2 and up["images_per_s"] > 0
    assert up["command"][1:3] == ["predict", "-i"] and "-c" in up["command"]  # the random weights, as a file
    call = json.loads((tmp_path / "upstream_calls.jsonl").read_text().splitlines()[0])
    assert sorted(call["inputs"]) == ["bench_00000.jpg", "bench_00001.jpg"]
    _check_gpu(up["gpu"])

    combos = {(e["batch_size"], e["precision"]) for e in report["ours"]}
    assert combos == {(1, "fp32"), (2, "fp32"), (1, "bf16"), (2, "bf16")}
    for e in report["ours"]:
        assert set(e) == OURS_FIELDS and e["error"] == "" and e["returncode"] == 0
        assert e["published"] == 2 and e["failed"] == {}
        assert "timing_run.py" in e["command"][1]
        assert set(e["stage_busy_s"]) == set(e["stage_s_per_image"]) == STAGES
        assert all(v is not None and v >= 0 for v in e["stage_busy_s"].values())
        assert 0 < e["predictor_busy_fraction"] <= 1
        assert e["ratio_vs_upstream"] == pytest.approx(e["images_per_s"] / up["images_per_s"], rel=1e-2)
        _check_gpu(e["gpu"])
    log = (tmp_path / "work" / "ours_b2_bf16.log").read_text()
    assert "random-weights-untrained" in log and "SHARP trunk runs in bf16" in log

    best = max(report["ours"], key=lambda e: e["images_per_s"])
    assert report["best"]["batch_size"] == best["batch_size"]
    assert report["goal"]["ratio_vs_upstream"] == 3.0 and report["goal"]["gpu_busy_fraction"] == 0.9
    if best["gpu"]["busy_fraction_active"] is None:  # no GPU: the busy half of the goal cannot be checked
        assert report["goal"]["met"] is None and "goal not checked" in report["summary"]
    assert res.stdout.startswith("*** RANDOM WEIGHTS")
    table = [line.split() for line in res.stdout.splitlines()]
    assert [r[:3] for r in table if r and r[0] in ("upstream", "ours")] == [
        ["upstream", "1", "fp32"], ["ours", "1", "fp32"], ["ours", "2", "fp32"], ["ours", "1", "bf16"],
        ["ours", "2", "bf16"]]
    assert res.stdout.strip().splitlines()[-1] == report["summary"]
    assert report["summary"].startswith("[RANDOM WEIGHTS] ours best") and "vs upstream" in report["summary"]


def test_bench_gpu_without_upstream_cli_uses_the_real_run_command(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(STANDINS))
    try:
        from sharp.models import PredictorParams, RGBGaussianPredictor

        ckpt = tmp_path / "sharp_bench.pt"
        torch.save(RGBGaussianPredictor(PredictorParams(seed=5)).state_dict(), ckpt)
    finally:
        sys.path.remove(str(STANDINS))
        for name in [n for n in sys.modules if n == "sharp" or n.startswith("sharp.")]:
            del sys.modules[name]
    out = tmp_path / "gpu.json"
    res = _run(tmp_path, _system_path_without_sharp(), "--images", "2", "--size", "32", "--batch-sizes", "2",
               "--precision", "fp32", "--device", "cpu", "--checkpoint", str(ckpt), "--json", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(out.read_text())
    assert set(report) == REPORT_FIELDS and report["random_weights"] is False and report["label"] == ""
    up = report["upstream"]
    assert set(up) == UPSTREAM_FIELDS and up["available"] is False and "not on PATH" in up["reason"]
    [ours] = report["ours"]
    assert ours["command"][1:4] == ["-m", "sharp_dataset_pipeline.cli", "run"]
    assert ours["published"] == 2 and ours["error"] == "" and ours["ratio_vs_upstream"] is None
    assert report["goal"]["met"] is None
    assert "upstream n/a" in report["summary"] and "RANDOM" not in res.stdout
    assert not (tmp_path / "upstream_calls.jsonl").exists()
