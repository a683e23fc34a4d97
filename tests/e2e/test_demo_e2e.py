"""The README's main job, end to end through the real CLI: samples → planar → local store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from e2e_utils import check_consistent, make_photos, run_cli

from sharp_dataset_pipeline.factories import samples_dir
from sharp_dataset_pipeline.publish.tar_shard import read_member_at
from sharp_dataset_pipeline.splat.spz import decode_spz


def test_demo_publishes_every_sample_and_loads_with_datasets(tmp_path: Path) -> None:
    store = tmp_path / "out"
    res = run_cli(tmp_path, "run", "--source", "samples", "--predictor", "planar", "--store", f"local:{store}",
                  "--summary-json", str(tmp_path / "summary.json"))
    assert res.returncode == 0, res.stderr
    samples = sorted(samples_dir().glob("*.jpg"))
    assert len(samples) >= 4
    rows = check_consistent(store)  # every member in its tar, size and hash as recorded
    assert len(rows) == len(samples)
    # A new dataset is sharded: each item's SPZ member decodes to the Gaussians its row counts.
    assert json.loads((store / ".coord" / "layout.json").read_text()) == {"layout": "shards"}
    for row in rows:
        spz = next(m for m in json.loads(row["members"]) if m["field"] == "spz")
        with (store / spz["shard"]).open("rb") as fh:
            blob = read_member_at(fh, spz["offset"], spz["size"], spz["sha256"])
        assert decode_spz(blob).scene.positions.shape[0] == row["num_gaussians"] > 0
        assert row["predictor"] == "planar" and "not SHARP" in row["model_version"]
    assert f"local:{store}" in res.stdout and f"published {len(samples)}" in res.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["published"] == len(samples) and summary["failed"] == {}
    assert set(summary["busy_s"]) >= {"fetch", "predict", "postprocess", "publish"}

    import datasets

    ds = datasets.load_dataset(str(store), split="train")  # the card's default config: the index
    assert ds.num_rows == len(samples) and sorted(ds["id"]) == sorted(r["id"] for r in rows)
    assert ds.features["image_size"].dtype == "int64" and ds.features["id"].dtype == "string"


def test_rerun_publishes_nothing_and_new_photos_only(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 5, seed=1)
    args = ("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}")
    first = run_cli(tmp_path, *args, "--summary-json", str(tmp_path / "s1.json"))
    assert first.returncode == 0, first.stderr
    assert json.loads((tmp_path / "s1.json").read_text())["published"] == 5
    again = run_cli(tmp_path, *args, "--summary-json", str(tmp_path / "s2.json"))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "s2.json").read_text())["published"] == 0
    make_photos(photos, 3, seed=2)
    shutil.copy(photos / "photo_01_0000.jpg", photos / "renamed_copy.jpg")
    third = run_cli(tmp_path, *args, "--summary-json", str(tmp_path / "s3.json"))
    assert third.returncode == 0, third.stderr
    s3 = json.loads((tmp_path / "s3.json").read_text())
    assert s3["published"] == 3
    rows = check_consistent(store)
    assert len(rows) == 8


def test_invalid_setting_is_one_clear_line(tmp_path: Path) -> None:
    res = run_cli(tmp_path, "run", "--predictor", "planar", MAX_IMAGES="lots")
    assert res.returncode == 2
    assert "MAX_IMAGES" in res.stderr and "Traceback" not in res.stderr


def test_main_script_runs_from_environment_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    from e2e_utils import cli_env

    script = Path(__file__).resolve().parents[2] / "sharp_dataset_pipeline_main.py"
    store = tmp_path / "out"
    env = cli_env(SOURCE="samples", PREDICTOR="planar", STORE=f"local:{store}", MAX_IMAGES="2")
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert len(check_consistent(store)) == 2


def test_run_files_can_be_dropped_after_publish(tmp_path: Path) -> None:
    store = tmp_path / "out"
    res = run_cli(tmp_path, "run", "--source", "samples", "--predictor", "planar", "--store", f"local:{store}",
                  "--run-id", "lean", KEEP_RUN_FILES="0")
    assert res.returncode == 0, res.stderr
    assert len(check_consistent(store)) == len(list(samples_dir().glob("*.jpg")))
    run = tmp_path / "runs" / "lean"
    assert not list((run / "gaussians").iterdir()) and not list((run / "images").iterdir())
