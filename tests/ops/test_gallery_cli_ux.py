"""The gallery as a newcomer sees it, through the real CLI: thumbnails of 16-bit photos, the
"not SHARP" mark on planar items, and a run report that shows only the store's own runs."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e2e.e2e_utils import make_photos, run_cli

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")


def _grey16(path: Path) -> np.ndarray:
    """A real 16-bit greyscale PNG: a horizontal ramp over the lower half of the 16-bit range."""
    ramp = np.linspace(0, 32767, 96, dtype=np.float64)
    data = np.tile(ramp, (64, 1)).astype(np.uint16)
    Image.fromarray(data).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # Pillow reads it as 16-bit, not as 8-bit grey
    return data


def _run(cwd: Path, store: str, run_id: str, photos: str = "photos") -> None:
    proc = run_cli(cwd, "run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}",
                   "--run-id", run_id, "--client-id", "ux", "--planar-resolution", "32")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_thumbnail_of_a_16_bit_png_keeps_its_tones(tmp_path: Path,
                                                    run_ops: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    (tmp_path / "photos").mkdir()
    data = _grey16(tmp_path / "photos" / "deep.png")
    _run(tmp_path, "store", "R1")
    proc = run_ops(tmp_path, "gallery", "--store", "local:store", "--out", "site")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (thumb,) = (tmp_path / "site" / "media").glob("*/photo.jpg")
    with Image.open(thumb) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
    # The ramp spans 0..0.5 of full scale: the thumbnail goes from black to mid grey, not white.
    expected = data.astype(np.float64).mean() / 65535 * 255
    assert abs(pixels.mean() - expected) < 4, (pixels.mean(), expected)
    assert pixels[:, :5].mean() < 10 and 110 < pixels[:, -5:].mean() < 140


def test_index_marks_planar_items_as_not_sharp(tmp_path: Path,
                                               run_ops: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    make_photos(tmp_path / "photos", 2, seed=3)
    _run(tmp_path, "store", "R1")
    proc = run_ops(tmp_path, "gallery", "--store", "local:store", "--out", "site")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gallery: 2 items on 1 page in site" in proc.stdout
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    cards = re.findall(r'<div class="card".*?</div></div>', index, flags=re.S)
    assert len(cards) == 2
    assert all('class="badge not-sharp"' in c and "planar: not SHARP" in c for c in cards)


def test_report_shows_only_the_runs_of_its_own_store(tmp_path: Path,
                                                     run_ops: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    make_photos(tmp_path / "photos-a", 2, seed=4)
    make_photos(tmp_path / "photos-b", 3, seed=5)
    _run(tmp_path, "store-a", "RUN-A", "photos-a")
    _run(tmp_path, "store-b", "RUN-B", "photos-b")
    # Built from another folder, with the runs folder named: the store's runs are still found.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_ops(elsewhere, "gallery", "--store", f"local:{tmp_path / 'store-a'}", "--out", "site",
                   "--runs", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (elsewhere / "site" / "report.html").read_text(encoding="utf-8")
    assert 'data-series="RUN-A' in report and "RUN-B" not in report
    assert "2 items published in 1 publish step by 1 client" in report
    assert "1 run with metrics or GPU logs" in report
    # Default run folder (beside the store, where `run` put them), from another folder: store B
    # finds its runs and sees only its own.
    proc = run_ops(elsewhere, "gallery", "--store", f"local:{tmp_path / 'store-b'}", "--out", "site-b")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (elsewhere / "site-b" / "report.html").read_text(encoding="utf-8")
    assert 'data-series="RUN-B' in report and "RUN-A" not in report


def test_runs_from_before_the_store_id_are_matched_by_their_store_and_folder(tmp_path: Path) -> None:
    import json

    from sharp_dataset_pipeline.ops.gallery.runs import read_runs, store_identity

    for run_id, store in (("OLD-A", "local:store-a"), ("OLD-B", "local:store-b")):
        folder = tmp_path / "runs" / run_id
        folder.mkdir(parents=True)
        summary = {"type": "summary", "t": 1.0, "store": store, "run_dir": f"runs/{run_id}", "published": 1}
        (folder / "metrics.jsonl").write_text(json.dumps(summary) + "\n", encoding="utf-8")
    (tmp_path / "runs" / "KILLED").mkdir()
    (tmp_path / "runs" / "KILLED" / "metrics.jsonl").write_text('{"type": "progress", "t": 1.0}\n')
    found = read_runs(tmp_path / "runs", store=store_identity(f"local:{tmp_path / 'store-a'}"))
    assert [r.run_id for r in found] == ["OLD-A"]
    assert len(read_runs(tmp_path / "runs")) == 3  # without a store: every run, as before
