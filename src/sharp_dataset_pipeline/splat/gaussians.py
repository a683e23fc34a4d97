"""Gaussians in SHARP's PLY layout. Pure.

The vertex block is one C-contiguous ``(N, 14)`` float32 array whose columns are SHARP's
properties in SHARP's order, so that the PLY body is exactly ``vertices.tobytes()`` on a
little-endian machine: no per-Gaussian Python loop anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VERTEX_PROPERTIES: tuple[str, ...] = (
    "x", "y", "z",
    "f_dc_0", "f_dc_1", "f_dc_2",
    "opacity",
    "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
)
XYZ = slice(0, 3)
F_DC = slice(3, 6)
OPACITY = 6
SCALE = slice(7, 10)
ROT = slice(10, 14)

SH_C0 = 0.28209479177387814
SHARP_VERSION = (1, 5, 0)
COLOR_SPACE_SRGB = 0


def disparity_quantiles(z: np.ndarray) -> tuple[float, float]:
    """10 % and 90 % quantiles of 1/z, linear interpolation (as torch.quantile does)."""
    if z.size == 0:
        return 0.0, 0.0
    inv = 1.0 / z.astype(np.float32)
    q = np.quantile(inv, [0.1, 0.9])
    return float(np.float32(q[0])), float(np.float32(q[1]))


@dataclass
class Gaussians:
    """A scene in SHARP's PLY layout plus the metadata elements SHARP writes after ``vertex``."""

    vertices: np.ndarray
    focal_px: float
    width: int
    height: int
    disparity: tuple[float, float] | None = None
    color_space: int = COLOR_SPACE_SRGB
    version: tuple[int, int, int] = SHARP_VERSION
    extrinsic: np.ndarray = field(default_factory=lambda: np.eye(4, dtype=np.float32))

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype="<f4")
        if v.ndim != 2 or v.shape[1] != len(VERTEX_PROPERTIES):
            raise ValueError(f"vertices must be (N, 14) float32, got {self.vertices.shape}")
        self.vertices = v
        if self.disparity is None:
            self.disparity = disparity_quantiles(v[:, 2])

    @property
    def count(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def intrinsic(self) -> np.ndarray:
        f = self.focal_px
        return np.array(
            [f, 0.0, self.width * 0.5, 0.0, f, self.height * 0.5, 0.0, 0.0, 1.0], dtype=np.float32
        )

    @classmethod
    def from_attributes(
        cls,
        xyz: np.ndarray,
        f_dc: np.ndarray,
        opacity_logit: np.ndarray,
        log_scale: np.ndarray,
        quat_wxyz: np.ndarray,
        *,
        focal_px: float,
        width: int,
        height: int,
    ) -> Gaussians:
        n = xyz.shape[0]
        v = np.empty((n, 14), dtype=np.float32)
        v[:, XYZ] = xyz
        v[:, F_DC] = f_dc
        v[:, OPACITY] = opacity_logit.reshape(n)
        v[:, SCALE] = log_scale
        v[:, ROT] = quat_wxyz
        return cls(vertices=v, focal_px=float(focal_px), width=int(width), height=int(height))


def f_dc_from_srgb(srgb: np.ndarray) -> np.ndarray:
    return ((np.asarray(srgb, dtype=np.float32) - np.float32(0.5)) / np.float32(SH_C0)).astype(np.float32)


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float32), eps, 1.0 - eps)
    return np.log(p / (np.float32(1.0) - p)).astype(np.float32)
