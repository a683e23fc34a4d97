"""Stand-in for ml-sharp's ``sharp`` command (run through ``bin/sharp``).

``sharp predict -i PATH -o DIR [--device D] [-v] [-c FILE]`` as upstream documents it: PATH is an
image or a folder searched recursively for image extensions in all-lower or all-upper case; one
flat ``DIR/<stem>.ply`` per image in SHARP's layout, written the upstream (slow) way. The focal
length follows upstream's EXIF rule (35 mm tag, else FocalLength with the phone rule, else 30 mm,
diagonal-based). The Gaussians are a tiny deterministic function of the image (2·8² of them).

Test hooks (environment): ``SHARP_STANDIN_LOG`` (append one JSON line with argv and cwd),
``SHARP_STANDIN_SLEEP`` (seconds to sleep first), ``SHARP_STANDIN_FAIL_AFTER`` (write that many
PLYs, then fail with a traceback on stderr and exit 1), ``SHARP_STANDIN_CORRUPT=1`` (truncate
every PLY written). The log line also lists the input file names and environment variable names.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sharp.utils.gaussians import (  # noqa: E402 - the stand-in package sits next to this file
    internal_intrinsics,
    reference_attributes,
    reference_save_ply,
    reference_unproject,
)

EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "heic")
GRID = 8


def _images(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix[1:] in EXTENSIONS + tuple(e.upper() for e in EXTENSIONS) else []
    found: list[Path] = []
    for ext in EXTENSIONS:
        for variant in (ext, ext.upper()):
            found += path.glob(f"**/*.{variant}")
    return found


def _focal_px(im: Image.Image, width: int, height: int) -> float:
    exif = im.getexif().get_ifd(0x8769)
    f35 = float(exif.get(0xA405, 0) or 0)
    if f35 < 1:
        f_mm = float(exif.get(0x920A, 0) or 0)
        f35 = f_mm * 8.4 if 0 < f_mm < 10 else f_mm
    if f35 < 1:
        print(f"{time.strftime('%H:%M:%S')} | WARNING | no focal length in EXIF, using 30 mm", flush=True)
        f35 = 30.0
    return f35 * math.sqrt(width**2 + height**2) / math.sqrt(36**2 + 24**2)


def _ndc(rgb: np.ndarray, disparity_factor: float) -> tuple[np.ndarray, ...]:
    h, w, _ = rgb.shape
    ys = (np.arange(GRID) + 0.5) / GRID
    xs = (np.arange(GRID) + 0.5) / GRID
    pooled = rgb[(ys * h).astype(int)][:, (xs * w).astype(int)].astype(float) / 255.0
    gy, gx = np.meshgrid(ys * 2 - 1, xs * 2 - 1, indexing="ij")
    means, scales, quats = [], [], []
    for layer in range(2):
        z = (1.0 + 0.5 * layer + pooled.mean(axis=2)) / (4.0 * disparity_factor)
        means.append(np.stack([gx * z, gy * z, z], -1))
        scales.append(0.05 * z[..., None] * (0.2 + pooled))
        q = np.concatenate([np.ones((GRID, GRID, 1)), pooled - 0.5], -1)
        quats.append(q / np.linalg.norm(q, axis=-1, keepdims=True))
    colors = np.concatenate([pooled.reshape(-1, 3)] * 2)
    opacities = np.full(len(colors), 0.7)
    return (np.concatenate([m.reshape(-1, 3) for m in means]), np.concatenate([s.reshape(-1, 3) for s in scales]),
            np.concatenate([q.reshape(-1, 4) for q in quats]), colors, opacities)


def _predict_one(path: Path, out_dir: Path) -> None:
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
        f_px = _focal_px(im, im.width, im.height)
    height, width, _ = rgb.shape
    means, scales, quats, colors, opacities = _ndc(rgb, f_px / width)
    m, s, q = reference_unproject(means, scales, quats, np.eye(4), internal_intrinsics(f_px, width, height),
                                  (1536, 1536))
    attrs = reference_attributes(m, s, q, colors, opacities)
    reference_save_ply(attrs, f_px, width, height, out_dir / f"{path.stem}.ply")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sharp")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict")
    p.add_argument("-i", "--input-path", required=True, type=Path)
    p.add_argument("-o", "--output-path", required=True, type=Path)
    p.add_argument("-c", "--checkpoint-path", type=Path)
    p.add_argument("--device", default="default")
    p.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not args.input_path.exists():
        print(f"Error: Path '{args.input_path}' does not exist.", file=sys.stderr)
        return 2
    images = sorted(_images(args.input_path))
    if os.environ.get("SHARP_STANDIN_LOG"):
        record = {"argv": argv, "cwd": os.getcwd(), "inputs": [p.name for p in images],
                  "env_names": sorted(os.environ)}
        with open(os.environ["SHARP_STANDIN_LOG"], "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    time.sleep(float(os.environ.get("SHARP_STANDIN_SLEEP", "0")))
    args.output_path.mkdir(parents=True, exist_ok=True)
    fail_after = int(os.environ.get("SHARP_STANDIN_FAIL_AFTER", "-1"))
    for done, path in enumerate(images):
        if done == fail_after:
            print("Traceback (most recent call last):\n  File \"predict.py\", line 1, in <module>\n"
                  "RuntimeError: stand-in failure while predicting " + path.name, file=sys.stderr)
            return 1
        print(f"{time.strftime('%H:%M:%S')} | INFO | Processing {path}", flush=True)
        _predict_one(path, args.output_path)
        if os.environ.get("SHARP_STANDIN_CORRUPT") == "1":
            out = args.output_path / f"{path.stem}.ply"
            out.write_bytes(out.read_bytes()[:-100])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
