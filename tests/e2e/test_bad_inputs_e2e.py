"""Bad inputs in the source folder each fail alone with a readable reason; the run exits 0."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from e2e_utils import check_consistent, make_photos, run_cli
from PIL import Image


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def make_bad_folder(folder: Path) -> dict[str, str]:
    """name → expected outcome ('ok' or a failure reason)."""
    make_photos(folder, 2, seed=9)
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    good = _save(Image.fromarray(rgb), "JPEG")
    files = {
        "zero.jpg": (b"", "empty_file"),
        "truncated.jpg": (good[: len(good) // 2], "truncated_image"),
        "text.jpg": (b"this is not a picture\n" * 10, "not_an_image"),
        "cmyk.jpg": (_save(Image.fromarray(rgb).convert("CMYK"), "JPEG"), "ok"),
        "deep.png": (_save(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"), "ok"),
        "palette.png": (_save(Image.fromarray(rgb).convert("P"), "PNG"), "ok"),
        "grey_alpha.png": (_save(Image.fromarray(rgb).convert("LA"), "PNG"), "ok"),
        "huge.png": (_png_header_only(30000, 30000), "too_large"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image extension")
    return {name: outcome for name, (_, outcome) in files.items()}


def test_bad_inputs_fail_alone_and_run_completes(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    expected = make_bad_folder(photos)
    res = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                  "--store", f"local:{store}", "--summary-json", str(tmp_path / "s.json"),
                  MAX_IMAGE_PIXELS="50000000")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    reasons = [r for r in expected.values() if r != "ok"]
    for reason in reasons:
        assert summary["failed"].get(reason, 0) >= 1, (reason, summary["failed"])
    assert sum(summary["failed"].values()) == len(reasons)
    ok = sum(1 for r in expected.values() if r == "ok") + 2
    assert summary["published"] == ok
    assert summary["skipped"].get("not_an_image_extension") == 1
    rows = check_consistent(store)
    published_names = {r["source_path"] for r in rows}
    assert {"cmyk.jpg", "deep.png", "palette.png", "grey_alpha.png"} <= published_names
    assert "failed" in res.stdout
