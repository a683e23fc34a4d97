"""Generate the bundled sample photos: six small procedural JPEG scenes (numpy + Pillow, seeded).

Run from the repository root:  python scripts/make_samples.py [--out DIR]
The outputs are deterministic for a given Pillow/numpy build; they are committed so the package
ships them (``sharp_dataset_pipeline/samples``) and a first run needs no download.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

SEED = 20240611
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "sharp_dataset_pipeline" / "samples"

LICENSE_TEXT = """\
Sample images: public-domain dedication (CC0 1.0)
=================================================

The JPEG files in this folder are not photographs. They were drawn by the program
scripts/make_samples.py of the sharp-dataset project, from fixed random seeds, using only
numpy and Pillow. No camera, person, place, brand or third-party artwork appears in them.

To the extent possible under law, the authors of sharp-dataset give up all copyright and
related or neighbouring rights to these images, worldwide, under the Creative Commons CC0 1.0
Universal public-domain dedication (https://creativecommons.org/publicdomain/zero/1.0/).
You may copy, modify, distribute and use them, commercially or not, without asking and
without attribution. They come with no warranty of any kind.

The focal length recorded in their EXIF data is made up for testing the pipeline's focal
length rules; it describes no real lens.
"""


def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs / (w - 1), ys / (h - 1)


def _lerp(a: tuple[float, ...], b: tuple[float, ...], t: np.ndarray) -> np.ndarray:
    a_, b_ = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a_ + (b_ - a_) * t[..., None]


def _blend(img: np.ndarray, mask: np.ndarray, color: tuple[float, ...]) -> None:
    img[:] = img * (1 - mask[..., None]) + np.asarray(color, np.float32) * mask[..., None]


def _soft(d: np.ndarray, edge: float = 1.5) -> np.ndarray:
    """Anti-aliased inside mask from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - d / edge, 0.0, 1.0)


def scene_hills(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(w, h)
    img = _lerp((90, 150, 230), (220, 235, 250), v)
    sun = np.hypot((u - 0.75) * w, (v - 0.2) * h) - 0.06 * w
    _blend(img, _soft(sun), (255, 240, 190))
    for layer, (shade, base) in enumerate([((70, 120, 80), 0.55), ((50, 100, 55), 0.68), ((35, 80, 40), 0.8)]):
        phase, freq = rng.uniform(0, 6.3), 2.0 + layer
        ridge = base + 0.06 * np.sin(u * freq * np.pi + phase) + 0.03 * np.sin(u * 7.1 + phase * 2)
        _blend(img, _soft((ridge - v) * h), shade)
    return img


def scene_checker_floor(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(w, h)
    horizon = 0.42
    img = _lerp((200, 205, 215), (160, 165, 180), v / horizon)
    below = v > horizon
    depth = 1.0 / np.maximum(v - horizon, 1e-3)  # distance along the floor grows towards the horizon
    fx, fz = (u - 0.5) * depth * 1.2, depth * 0.25
    checks = ((np.floor(fx) + np.floor(fz)) % 2).astype(np.float32)
    fade = np.clip((v - horizon) / 0.25, 0, 1)
    floor = _lerp((60, 60, 70), (235, 230, 220), checks * fade + 0.5 * (1 - fade))
    img[below] = floor[below]
    cx = rng.uniform(0.35, 0.65)
    ball = np.hypot((u - cx) * w, (v - 0.62) * h) - 0.09 * h
    shade = np.clip(1.2 - np.hypot(u - cx + 0.03, v - 0.58) * 6, 0.3, 1.0)
    _blend(img, _soft(ball), (0, 0, 0))
    img += _soft(ball)[..., None] * np.stack([200 * shade, 60 * shade, 50 * shade], -1)
    return img


def scene_shapes(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(w, h)
    img = _lerp((240, 225, 200), (180, 150, 120), v)
    table = v > 0.55
    img[table] = _lerp((150, 100, 60), (110, 70, 40), v)[table]
    # Far (higher) shapes first, so nearer ones cover them.
    for cy in sorted(rng.uniform(0.58, 0.88, 5)):
        cx, r = rng.uniform(0.12, 0.88), rng.uniform(0.06, 0.12)
        color = tuple(float(c) for c in rng.integers(40, 230, 3))
        d = np.hypot((u - cx) * w, (v - cy) * h) - r * h if rng.random() < 0.5 else \
            np.maximum(np.abs(u - cx) * w, np.abs(v - cy) * h) - r * h
        _blend(img, _soft(d + 4) * 0.35, (40, 30, 20))  # contact shadow
        _blend(img, _soft(d), color)
    return img


def scene_corridor(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(w, h)
    du, dv = u - 0.5, v - 0.48
    img = np.empty((h, w, 3), np.float32)
    wall = np.abs(du) * h > np.abs(dv) * w * 0.9
    depth = 1.0 / np.maximum(np.where(wall, np.abs(du), np.abs(dv)), 1e-3)
    stripes = (np.floor(depth * 0.6) % 2).astype(np.float32)
    light = np.clip(1.4 - depth * 0.04, 0.35, 1.0)
    img[:] = _lerp((120, 130, 150), (170, 180, 200), stripes) * light[..., None]
    floor = ~wall & (dv > 0)
    img[floor] = (_lerp((90, 70, 60), (140, 110, 90), stripes) * light[..., None])[floor]
    door = np.maximum(np.abs(du) * w, np.abs(dv) * h) - 0.035 * w
    _blend(img, _soft(door), (250, 245, 220))
    img += rng.normal(0, 1.5, img.shape[:2])[..., None]
    return img


def scene_sunset(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(w, h)
    img = _lerp((40, 30, 90), (250, 150, 70), np.clip(v / 0.7, 0, 1))
    _blend(img, _soft(np.hypot((u - 0.4) * w, (v - 0.62) * h) - 0.1 * h), (255, 210, 120))
    water = v > 0.68
    img[water] = _lerp((230, 140, 80), (30, 30, 60), (v - 0.68) / 0.32)[water]
    for _ in range(4):
        x, height = rng.uniform(0.05, 0.95), rng.uniform(0.25, 0.45)
        top = 0.69 - height
        trunk = np.maximum(np.abs(u - x) * w - 3, np.abs(v - (top + 0.69) / 2) * h - height * h / 2)
        crown = np.hypot((u - x) * w, (v - top) * h * 1.4) - height * 0.35 * h
        _blend(img, _soft(np.minimum(trunk, crown)), (20, 15, 25))
    return img


def scene_boxes(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    u, v = _grid(w, h)
    img = _lerp((210, 220, 225), (120, 125, 130), v)
    order = sorted(rng.uniform(0.1, 0.9, 6))
    for i, cx in enumerate(order):
        size = 0.06 + 0.02 * i
        cy = 0.35 + 0.08 * i
        top = np.maximum(np.abs(u - cx) * w, np.abs(v - cy) * h) - size * h
        side = np.maximum(np.abs(u - cx) * w - size * h, np.abs(v - cy - size) * h - 0.3 * size * h)
        base = tuple(float(c) for c in rng.integers(60, 220, 3))
        _blend(img, _soft(side), tuple(c * 0.6 for c in base))
        _blend(img, _soft(top), base)
    return img


# name, scene, size, focal length in 35 mm terms (None: no EXIF at all)
SAMPLES = [
    ("hills", scene_hills, (640, 427), 26),
    ("checker_floor", scene_checker_floor, (640, 480), 28),
    ("tabletop_shapes", scene_shapes, (600, 400), 50),
    ("corridor", scene_corridor, (480, 320), 24),
    ("sunset_trees", scene_sunset, (512, 384), None),
    ("boxes", scene_boxes, (480, 360), 35),
]


def render(name: str, scene, size: tuple[int, int], seed: int) -> Image.Image:
    w, h = size
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    pixels = np.clip(np.rint(scene(w, h, rng)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def exif_bytes(focal_mm35: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Software] = "sharp-dataset scripts/make_samples.py"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = focal_mm35
    return exif.tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, scene, size, focal in SAMPLES:
        image = render(name, scene, size, SEED)
        path = args.out / f"{name}.jpg"
        extra = {"exif": exif_bytes(focal)} if focal is not None else {}
        image.save(path, "JPEG", quality=85, optimize=True, **extra)
        print(f"{path.name}: {size[0]}x{size[1]}, {path.stat().st_size} bytes, focal35={focal}")
    (args.out / "LICENSE.txt").write_text(LICENSE_TEXT, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
