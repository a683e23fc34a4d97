"""CPU preview thumbnails of a splat: numpy only, no torch, no GPU.

Each Gaussian is drawn as its projected centre (optionally with a small Gaussian footprint) and the
samples are alpha-composited front to back per pixel, with DC colour only. The composite is
vectorised: samples are sorted by (pixel, depth); the transmittance in front of each sample is the
exponential of a segmented cumulative sum of ``log(1 - alpha)`` over the nearer samples of the same
pixel; ``np.bincount`` then adds up the weighted colours per pixel.

With SHARP's metadata the camera is the input photo's own pinhole (OpenCV convention: x right, y
down, camera at the origin looking +z), so the preview reproduces the photo's view. Without a
camera (focal length or image size zero) an automatic camera frames the opaque splats.
``render_preview`` is pure; ``save_preview`` writes the image file.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sharp_dataset_pipeline.fsio import atomic_file
from sharp_dataset_pipeline.splat.gaussians import F_DC, OPACITY, SCALE, SH_C0, XYZ, Gaussians

MIN_ALPHA = 1.0 / 255.0  # splats fainter than one grey level are skipped
_MAX_ALPHA = 1.0 - 1e-6  # keeps log(1 - alpha) finite; the rest is invisible at 8 bits
_NEAR = 1e-6
_AUTO_FOV_DEG = 60.0  # horizontal field of view of the automatic camera
_AUTO_PERCENTILE = 95.0
_AUTO_MARGIN = 1.1
_SAVE_FORMATS = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}


@dataclass(frozen=True)
class Camera:
    """A pinhole looking along +z from ``position`` (OpenCV axes), rendering ``width`` × ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _output_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def photo_camera(g: Gaussians, long_side: int) -> Camera:
    """The input photo's pinhole (f, W/2, H/2 from the PLY metadata) scaled to the preview size."""
    w, h = _output_size(g.width, g.height, long_side)
    sx, sy = w / g.width, h / g.height
    return Camera(fx=g.focal_px * sx, fy=g.focal_px * sy, cx=w / 2, cy=h / 2, width=w, height=h)


def auto_camera(xyz: np.ndarray, long_side: int) -> Camera:
    """A camera looking along +z at the median of ``xyz``, far enough back to frame most of it.

    The framed extent is the 95th percentile of the distances to the median on each axis, so a
    few stray splats do not shrink the picture; the aspect ratio follows that extent (between 1:2
    and 2:1).
    """
    if xyz.shape[0] == 0:
        return Camera(fx=long_side / 2, fy=long_side / 2, cx=long_side / 2, cy=long_side / 2,
                      width=long_side, height=long_side)
    centre = np.median(xyz, axis=0)
    half = np.percentile(np.abs(xyz - centre), _AUTO_PERCENTILE, axis=0) * _AUTO_MARGIN
    hx, hy, hz = (float(x) for x in half)
    scale = max(hx, hy, hz, 1e-6)
    hx, hy = max(hx, 1e-3 * scale), max(hy, 1e-3 * scale)
    aspect = min(2.0, max(0.5, hx / hy))
    w, h = _output_size(round(1000 * aspect), 1000, long_side)
    tan_x = math.tan(math.radians(_AUTO_FOV_DEG) / 2)
    tan_y = tan_x * h / w
    # The median plane is framed; splats in front of it (up to hz) stay in front of the camera.
    distance = max(hx / tan_x, hy / tan_y) + hz
    f = (w / 2) / tan_x
    position = (float(centre[0]), float(centre[1]), float(centre[2]) - distance)
    return Camera(fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h, position=position)


def choose_camera(g: Gaussians, long_side: int) -> Camera:
    """The photo camera when the metadata has one, else an automatic camera."""
    if g.focal_px > 0 and g.width > 0 and g.height > 0:
        return photo_camera(g, long_side)
    v = g.vertices
    alpha = _sigmoid(v[:, OPACITY])
    ok = np.isfinite(v).all(axis=1) & (alpha >= MIN_ALPHA)
    return auto_camera(v[ok, XYZ].astype(np.float64), long_side)


def render_preview(
    g: Gaussians,
    long_side: int = 512,
    *,
    background: tuple[int, int, int] = (0, 0, 0),
    max_radius: int = 0,
    camera: Camera | None = None,
) -> np.ndarray:
    """Render ``g`` to an ``(H, W, 3)`` uint8 image whose longer side is ``long_side`` pixels.

    Colour is ``clip(f_dc · SH_C0 + 0.5, 0, 1)`` (SHARP stores sRGB), alpha ``sigmoid(opacity)``.
    Every splat covers at least its centre pixel; ``max_radius > 0`` also spreads splats whose
    projected size is larger over a Gaussian footprint of up to that many pixels (costlier; useful
    for sparse scenes such as a filtered splat). ``camera`` overrides the automatic choice.
    """
    if long_side < 1:
        raise ValueError(f"long_side must be >= 1, got {long_side}")
    cam = camera or choose_camera(g, long_side)
    samples = _project(g, cam, max_radius)
    return _composite(samples, cam.width, cam.height, background)


@dataclass
class _Samples:
    pixel: np.ndarray  # int64 flat pixel index
    depth: np.ndarray  # float32, camera z
    alpha: np.ndarray  # float32
    colour: np.ndarray  # (n, 3) float32


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflow → alpha 0, which is the right limit
        return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def _project(g: Gaussians, cam: Camera, max_radius: int) -> _Samples:
    vert = g.vertices
    alpha = _sigmoid(vert[:, OPACITY])
    xyz = vert[:, XYZ] - np.asarray(cam.position, dtype=np.float32)
    z = xyz[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = cam.fx * xyz[:, 0] / z + cam.cx
        v = cam.fy * xyz[:, 1] / z + cam.cy
    ok = (z > _NEAR) & (alpha >= MIN_ALPHA) & np.isfinite(u) & np.isfinite(v)
    ok &= np.isfinite(vert[:, F_DC]).all(axis=1)
    ok &= (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    idx = np.flatnonzero(ok)
    ix = u[idx].astype(np.int64)  # u >= 0 here, so truncation is floor
    iy = v[idx].astype(np.int64)
    colour = np.clip(vert[idx, F_DC] * np.float32(SH_C0) + np.float32(0.5), 0.0, 1.0)
    samples = _Samples(iy * cam.width + ix, z[idx], np.minimum(alpha[idx], _MAX_ALPHA), colour)
    if max_radius > 0:
        with np.errstate(over="ignore"):
            sigma_px = cam.fx * np.exp(vert[idx, SCALE].max(axis=1)) / z[idx]
        samples = _add_footprints(samples, u[idx], v[idx], sigma_px, cam, max_radius)
    return samples


def _add_footprints(
    s: _Samples, u: np.ndarray, v: np.ndarray, sigma_px: np.ndarray, cam: Camera, max_radius: int
) -> _Samples:
    """Spread splats wider than a pixel over their neighbours, grouped by integer radius.

    A neighbour's alpha falls off with its pixel centre's distance to the projected centre; the
    pixel that holds the centre keeps the full alpha (already in ``s``).
    """
    ix, iy = u.astype(np.int64), v.astype(np.int64)
    with np.errstate(invalid="ignore"):
        radius = np.clip(np.nan_to_num(2.0 * sigma_px, nan=0.0), 0, max_radius).astype(np.int64)
    parts = [s]
    for r in range(1, max_radius + 1):
        sel = np.flatnonzero(radius == r)
        if sel.size == 0:
            continue
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        ring = (dx != 0) | (dy != 0)  # the centre pixel is already in ``s``
        dx, dy = dx[ring], dy[ring]
        px = ix[sel, None] + dx[None, :]
        py = iy[sel, None] + dy[None, :]
        inside = (px >= 0) & (px < cam.width) & (py >= 0) & (py < cam.height)
        sig = sigma_px[sel, None]
        ddx = px + 0.5 - u[sel, None]
        ddy = py + 0.5 - v[sel, None]
        falloff = np.exp(-0.5 * (ddx * ddx + ddy * ddy) / (sig * sig)).astype(np.float32)
        a = s.alpha[sel, None] * falloff
        keep = inside & (a >= MIN_ALPHA)
        rows = np.broadcast_to(sel[:, None], keep.shape)[keep]
        parts.append(_Samples((py * cam.width + px)[keep], s.depth[rows], a[keep], s.colour[rows]))
    if len(parts) == 1:
        return s
    return _Samples(
        np.concatenate([p.pixel for p in parts]),
        np.concatenate([p.depth for p in parts]),
        np.concatenate([p.alpha for p in parts]),
        np.concatenate([p.colour for p in parts]),
    )


def _composite(s: _Samples, width: int, height: int, background: tuple[int, int, int]) -> np.ndarray:
    npix = width * height
    bg = np.asarray(background, dtype=np.float64) / 255.0
    if s.pixel.size == 0:
        return np.broadcast_to(np.round(bg * 255).astype(np.uint8), (height, width, 3)).copy()
    # Sort by pixel, then depth, with one integer key: depths are positive here, and the bit pattern
    # of a positive float32 orders like its value. A stable sort keeps equal depths in index order.
    key = (s.pixel.astype(np.uint64) << np.uint64(32)) | s.depth.astype("<f4").view("<u4").astype(np.uint64)
    order = np.argsort(key, kind="stable")
    pixel = s.pixel[order]
    alpha = s.alpha[order].astype(np.float64)
    log_keep = np.log1p(-alpha)
    # Transmittance in front of each sample: exclusive cumulative sum of log(1 - a) within its pixel.
    inclusive = np.cumsum(log_keep)
    starts = np.flatnonzero(np.r_[True, pixel[1:] != pixel[:-1]])
    lengths = np.diff(np.r_[starts, pixel.size])
    before_segment = np.repeat(inclusive[starts] - log_keep[starts], lengths)
    weight = alpha * np.exp(inclusive - log_keep - before_segment)
    coverage = np.bincount(pixel, weights=weight, minlength=npix)
    image = np.empty((npix, 3), dtype=np.float64)
    colour = s.colour[order]
    for c in range(3):
        image[:, c] = np.bincount(pixel, weights=weight * colour[:, c], minlength=npix)
    image += (1.0 - coverage)[:, None] * bg[None, :]
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8).reshape(height, width, 3)


def encode_preview(img: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 image as PNG, WEBP or JPEG bytes."""
    arr = np.ascontiguousarray(img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {arr.shape}")
    buf = io.BytesIO()
    options = {"quality": quality} if fmt in ("WEBP", "JPEG") else {"optimize": False}
    Image.fromarray(arr, "RGB").save(buf, format=fmt, **options)
    return buf.getvalue()


def save_preview(img: np.ndarray, path: Path, quality: int = 90) -> tuple[int, str]:
    """Write ``img`` to ``path`` atomically, in the format its extension names (.png, .webp, .jpg).

    Returns ``(size in bytes, sha256 hex)``.
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unsupported preview extension {path.suffix!r}; use one of {sorted(_SAVE_FORMATS)}")
    data = encode_preview(img, fmt, quality)
    with atomic_file(path) as f:
        f.write(data)
    return len(data), hashlib.sha256(data).hexdigest()
