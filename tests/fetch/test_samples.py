"""The bundled sample photos: present, small, decodable, with the focal lengths the script recorded."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from sharp_dataset_pipeline.fetch.image import decode_for_predictor

SAMPLES = Path(str(resources.files("sharp_dataset_pipeline") / "samples"))
JPEGS = sorted(SAMPLES.glob("*.jpg"))


def test_six_samples_and_a_licence() -> None:
    assert len(JPEGS) == 6
    licence = (SAMPLES / "LICENSE.txt").read_text(encoding="utf-8")
    assert "CC0" in licence and "make_samples.py" in licence


@pytest.mark.parametrize("path", JPEGS, ids=lambda p: p.name)
def test_sample_is_small_and_decodes(path: Path) -> None:
    assert path.stat().st_size < 60_000
    img = decode_for_predictor(path, max_pixels=10_000_000)
    assert img.format == "jpg"
    assert 320 <= min(img.width, img.height) and max(img.width, img.height) <= 640
    assert img.rgb.std() > 10  # a scene, not a flat fill


def test_all_but_one_carry_a_35mm_focal_length() -> None:
    sources = sorted(decode_for_predictor(p, max_pixels=10_000_000).focal_source for p in JPEGS)
    assert sources == ["default"] + ["exif_35mm"] * 5
