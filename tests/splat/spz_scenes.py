"""Scenes and tolerance checks shared by the SPZ tests.

``assert_within_quantisation`` is the contract of the format: every decoded value lies within half a
step of SPZ's grid for that attribute (plus float32 rounding), and nothing else.
"""

from __future__ import annotations

import os

import numpy as np

from sharp_dataset_pipeline.splat.spz import SplatArrays, position_step

COLOR_STEP = 1.0 / (0.15 * 255)  # f_dc units per colour byte
COLOR_RANGE = 127.5 * COLOR_STEP  # |f_dc| beyond this is clamped
ALPHA_STEP = 1.0 / 255  # in sigmoid space
SCALE_STEP = 1.0 / 16  # log-scale units per byte; range -10 … -10 + 255/16
ROT_STEP = np.sqrt(0.5) / 511  # smallest-three: each stored component on this grid
SH_STEPS = (8 / 128, 16 / 128)  # degree-1 coefficients on a 1/16 grid, the others on 1/8 (after a 1/128 one)


def random_scene(n: int, seed: int, *, sh_degree: int = 0, far: float = 1000.0) -> SplatArrays:
    """Varied scenes: depths from 5 cm to ``far``, every kind of rotation, scales across SPZ's range."""
    rng = np.random.default_rng(seed)
    depth = np.exp(rng.uniform(np.log(0.05), np.log(far), n))
    xy = rng.uniform(-1.2, 1.2, (n, 2)) * depth[:, None]
    positions = np.column_stack([xy, depth * rng.choice([-1.0, 1.0], n, p=[0.1, 0.9])])
    q = rng.standard_normal((n, 4))
    special = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, -1], [0.5, 0.5, 0.5, 0.5], [-0.5, 0.5, -0.5, 0.5],
                        [0.7071, 0.7071, 0, 0], [0, -0.7071, 0.7071, 0], [-1, 0, 0, 0]], float)
    k = min(n, len(special))
    q[:k] = special[:k]
    q *= rng.uniform(0.2, 3.0, (n, 1))  # unnormalised on purpose: SPZ stores the unit quaternion
    sh_rest = None
    if sh_degree:
        dim = (0, 3, 8, 15)[sh_degree]
        sh_rest = rng.uniform(-0.9, 0.9, (n, 3 * dim))
    return SplatArrays(
        positions=positions.astype(np.float32),
        colors=rng.uniform(-3.2, 3.2, (n, 3)).astype(np.float32),
        alphas=rng.uniform(-8, 8, n).astype(np.float32),
        scales=rng.uniform(-9.9, 5.8, (n, 3)).astype(np.float32),
        rotations=q.astype(np.float32),
        sh_rest=None if sh_rest is None else sh_rest.astype(np.float32),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def rotation_errors(src_wxyz: np.ndarray, got_wxyz: np.ndarray) -> np.ndarray:
    """Per-component error of the decoded unit quaternion, after choosing the sign (q and -q are one rotation)."""
    q = np.asarray(src_wxyz, np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = np.asarray(got_wxyz, np.float64)
    sign = np.where((q * g).sum(axis=1) < 0, -1.0, 1.0)[:, None]
    return np.abs(q - sign * g)


def assert_within_quantisation(src: SplatArrays, got: SplatArrays, fractional_bits: int) -> None:
    """Decoded ``got`` is ``src`` up to SPZ's quantisation, attribute by attribute."""
    assert got.count == src.count
    pos_tol = 0.5 * position_step(fractional_bits) + 1e-7 * np.abs(src.positions)
    assert (np.abs(got.positions - src.positions) <= pos_tol).all(), "positions"
    inside = np.abs(src.colors) < COLOR_RANGE - COLOR_STEP
    assert inside.mean() > 0.9  # the scene exercises the grid, not only the clamp
    col_err = np.abs(got.colors.astype(np.float64) - src.colors)
    assert (col_err[inside] <= 0.5 * COLOR_STEP + 1e-5).all(), "colours"
    assert (np.abs(got.colors[~inside]) >= COLOR_RANGE - COLOR_STEP - 1e-5).all(), "clamped colours"
    alpha_err = np.abs(_sigmoid(got.alphas) - _sigmoid(src.alphas))
    assert (alpha_err <= 0.5 * ALPHA_STEP + 1e-5).all(), f"alpha: max error {alpha_err.max()}"
    assert (np.abs(got.scales - src.scales) <= 0.5 * SCALE_STEP + 1e-5).all(), "log-scales"
    err = rotation_errors(src.rotations, got.rotations)
    q = np.abs(src.rotations / np.linalg.norm(src.rotations, axis=1, keepdims=True))
    largest = (np.argmax(q[:, [1, 2, 3, 0]], axis=1) + 1) % 4  # ties go to the first in x, y, z, w order
    stored = np.ones_like(err, bool)
    stored[np.arange(len(err)), largest] = False
    assert (err[stored] <= 0.5 * ROT_STEP + 1e-6).all(), f"rotations (stored): max {err[stored].max()}"
    # The largest component is rebuilt from the other three: it is at least 1/2, so its error is at
    # most sqrt(3) * sqrt(3/4) / (1/2) = 3 times theirs.
    assert (err[~stored] <= 1.5 * ROT_STEP + 1e-6).all(), f"rotations (rebuilt): max {err[~stored].max()}"
    if src.sh_rest is not None:
        dim = src.sh_rest.shape[1] // 3
        band1 = np.zeros(dim, bool)
        band1[: min(3, dim)] = True
        tol = np.where(np.tile(band1, 3), 0.5 * SH_STEPS[0], 0.5 * SH_STEPS[1]) + 0.5 / 128 + 1e-6
        assert got.sh_rest is not None
        assert (np.abs(got.sh_rest - src.sh_rest) <= tol).all(), "sh"


def golden_scene(sh_degree: int = 0, n: int = 96) -> SplatArrays:
    """A small fixed scene built with exact arithmetic only (no RNG, no transcendental functions), so
    the same float32 values come out on every machine and numpy version."""
    i = np.arange(n, dtype=np.float64)
    positions = np.column_stack([(i % 7 - 3) * 0.37, (i % 5 - 2) * 0.61 - i / 64, 0.5 + i * 0.43])
    q = np.column_stack([1 + i % 3, (i % 4) - 1.5, ((i * 7) % 5) - 2, ((i * 3) % 11) / 3 - 1.7])
    q[::9] = [0.5, -0.5, 0.5, -0.5]  # ties between components
    colors = np.column_stack([(i % 13) / 4 - 1.5, (i % 17) / 5 - 1.6, -(i % 11) / 3 + 1.6])
    alphas = (i % 19) / 1.5 - 6
    scales = np.column_stack([-9 + (i % 29) / 2, -4 - (i % 7) / 3, (i % 23) / 4 - 5])
    sh_rest = None
    if sh_degree:
        dim = (0, 3, 8, 15)[sh_degree]
        k = np.arange(3 * dim, dtype=np.float64)
        sh_rest = (((i[:, None] * 31 + k[None, :] * 17) % 41) - 20) / 23
    return SplatArrays(
        positions=positions.astype(np.float32), colors=colors.astype(np.float32), alphas=alphas.astype(np.float32),
        scales=scales.astype(np.float32), rotations=q.astype(np.float32),
        sh_rest=None if sh_rest is None else sh_rest.astype(np.float32),
    )


def ply_bytes(s: SplatArrays, *, normals: bool = True, extra: dict[str, np.ndarray] | None = None) -> bytes:
    """``s`` as a classic 3DGS PLY (the layout of the original training code: x, y, z, nx, ny, nz,
    f_dc_*, f_rest_*, opacity, scale_*, rot_*), written by plyfile."""
    import io

    from plyfile import PlyData, PlyElement

    cols: list[tuple[str, np.ndarray]] = [("x", s.positions[:, 0]), ("y", s.positions[:, 1]), ("z", s.positions[:, 2])]
    if normals:
        cols += [(f"n{c}", np.zeros(s.count, np.float32)) for c in "xyz"]
    cols += [(f"f_dc_{j}", s.colors[:, j]) for j in range(3)]
    if s.sh_rest is not None:
        cols += [(f"f_rest_{j}", s.sh_rest[:, j]) for j in range(s.sh_rest.shape[1])]
    cols += [("opacity", s.alphas)] + [(f"scale_{j}", s.scales[:, j]) for j in range(3)]
    cols += [(f"rot_{j}", s.rotations[:, j]) for j in range(4)]
    cols += list((extra or {}).items())
    vertex = np.empty(s.count, dtype=[(name, "f4") for name, _ in cols])
    for name, values in cols:
        vertex[name] = values
    buf = io.BytesIO()
    PlyData([PlyElement.describe(vertex, "vertex")]).write(buf)
    return buf.getvalue()


def read_ply_columns(path: str | os.PathLike[str]) -> SplatArrays:
    """A 3DGS PLY read by property name with plyfile (any property order, e.g. splat-transform's)."""
    from plyfile import PlyData

    v = PlyData.read(str(path))["vertex"].data
    names = v.dtype.names
    rest = sorted((n for n in names if n.startswith("f_rest_")), key=lambda n: int(n[7:]))

    def cols(*keys: str) -> np.ndarray:
        return np.column_stack([np.asarray(v[k], np.float32) for k in keys])

    return SplatArrays(
        positions=cols("x", "y", "z"), colors=cols("f_dc_0", "f_dc_1", "f_dc_2"),
        alphas=np.asarray(v["opacity"], np.float32), scales=cols("scale_0", "scale_1", "scale_2"),
        rotations=cols("rot_0", "rot_1", "rot_2", "rot_3"), sh_rest=cols(*rest) if rest else None,
    )
