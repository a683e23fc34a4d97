"""The ``planar`` predictor: NOT SHARP. A small CPU stand-in for demos, dry runs and tests.

It lifts every pixel of a downscaled image to one flat Gaussian on a fronto-parallel plane, at a
depth set by the focal length (``z = 2 · f_px / max(W, H)`` metres, so a wider lens puts the plane
closer), coloured by the pixel. Seen from the photo's own camera it reproduces the photo; from
anywhere else it is a flat card. It writes SHARP's exact PLY layout so that everything
downstream (validation, formats, previews, publishing) is exercised for real.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..records import Failure, FetchedImage
from ..splat.gaussians import Gaussians, f_dc_from_srgb, logit
from .base import RawSplat, ReadyGaussians

PLANAR_OPACITY = 0.95
PLANAR_THICKNESS = 0.05  # z std-dev as a fraction of the in-plane std-dev


def plane_depth(focal_px: float, width: int, height: int) -> float:
    return 2.0 * focal_px / max(width, height)


def lift_to_plane(rgb: np.ndarray, focal_px: float, width: int, height: int, resolution: int) -> Gaussians:
    """One Gaussian per pixel of ``rgb`` downscaled so its long side is at most ``resolution``."""
    h0, w0 = rgb.shape[:2]
    scale = min(1.0, resolution / max(h0, w0))
    w, h = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    if (w, h) != (w0, h0):
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BOX))
    z = plane_depth(focal_px, width, height)
    f_small = focal_px * (w / width)
    u = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) * (z / f_small)
    v = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) * (z / f_small)
    xx, yy = np.meshgrid(u, v)
    n = w * h
    xyz = np.stack([xx.ravel(), yy.ravel(), np.full(n, z, dtype=np.float32)], axis=1)
    sigma = 0.5 * z / f_small
    log_scale = np.log(np.array([sigma, sigma, sigma * PLANAR_THICKNESS], dtype=np.float32))
    quat = np.zeros((n, 4), dtype=np.float32)
    quat[:, 0] = 1.0
    return Gaussians.from_attributes(
        xyz,
        f_dc_from_srgb(rgb.reshape(n, 3).astype(np.float32) / 255.0),
        logit(np.full(n, PLANAR_OPACITY, dtype=np.float32)),
        np.broadcast_to(log_scale, (n, 3)),
        quat,
        focal_px=focal_px,
        width=width,
        height=height,
    )


class PlanarPredictor:
    """Lifts pixels to a plane; ``model_version`` says plainly that this is not SHARP."""

    name = "planar"
    model_version = "planar-1 (not SHARP)"

    def __init__(self, resolution: int = 256, batch_size: int = 1) -> None:
        self.resolution = resolution
        self.batch_size = batch_size

    def predict(self, images: Sequence[FetchedImage]) -> list[RawSplat | Failure]:
        out: list[RawSplat | Failure] = []
        for img in images:
            g = lift_to_plane(img.rgb, img.focal_px, img.width, img.height, self.resolution)
            out.append(ReadyGaussians(g))
        return out

    def close(self) -> None:
        return None
