"""Stand-in for ``sharp.utils.gaussians``: the documented *slow* upstream post-processing.

This is the independent reference the project's fast unprojection is tested and benchmarked
against. It follows the method ml-sharp documents, written from the formulas (not copied):

* the affine map ``A = inverse(Nd · K' · E)`` built literally from 4×4 matrices;
* covariances composed per Gaussian, decomposed by a float64 SVD, reflections fixed by negating
  the last column of ``U``, rotations turned into quaternions by SciPy;
* the PLY written through ``plyfile`` from a Python list of per-vertex tuples.

The numpy functions (``internal_intrinsics``, ``reference_unproject``, ``reference_attributes``,
``reference_save_ply``) need no torch; ``unproject_gaussians``, ``save_ply`` and ``load_ply``
are the upstream-named torch wrappers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from plyfile import PlyData, PlyElement
from scipy.spatial.transform import Rotation

LOGGER = logging.getLogger("sharp.utils.gaussians")
UPSTREAM_INTERNAL = 1536
SH_C0 = 0.28209479177387814


class Gaussians3D(NamedTuple):
    """Batched Gaussians: means [B,N,3], std-dev scales [B,N,3], quats wxyz [B,N,4], linear
    colours [B,N,3], opacities [B,N]."""

    mean_vectors: Any
    singular_values: Any
    quaternions: Any
    colors: Any
    opacities: Any

    def to(self, device: Any) -> Gaussians3D:
        return Gaussians3D(*(t.to(device) for t in self))


class SceneMetaData(NamedTuple):
    focal_length_px: float
    resolution_px: tuple[int, int]
    color_space: str


def internal_intrinsics(f_px: float, width: int, height: int, size: int = UPSTREAM_INTERNAL) -> np.ndarray:
    """The 4×4 pinhole intrinsics of the original image, rescaled to the ``size``² internal grid."""
    k = np.array([[f_px, 0, width / 2, 0], [0, f_px, height / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    k[0] *= size / width
    k[1] *= size / height
    return k


def _affine(extrinsics: np.ndarray, intrinsics: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    h, w = image_shape
    # Pixel grid → [-1, 1] for points written as (u·z, v·z, z): x_ndc·z = (2u/w − 1)·z.
    ndc = np.array([[2 / w, 0, -1, 0], [0, 2 / h, -1, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    return np.linalg.inv(ndc @ intrinsics @ extrinsics)[:3]


def reference_unproject(
    means: np.ndarray, scales: np.ndarray, quats: np.ndarray,
    extrinsics: np.ndarray, intrinsics: np.ndarray, image_shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NDC → metric (means, std-dev scales, wxyz quaternions), float64, the upstream way."""
    a = _affine(np.asarray(extrinsics, float), np.asarray(intrinsics, float), image_shape)
    lin, shift = a[:, :3], a[:, 3]
    m = np.asarray(means, float) @ lin.T + shift
    q = np.asarray(quats, float)
    rot = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # SciPy normalises; it is x, y, z, w
    s2 = np.asarray(scales, float) ** 2
    cov = (rot * s2[:, None, :]) @ rot.transpose(0, 2, 1)  # R diag(s²) Rᵀ
    cov = lin @ cov @ lin.T
    u, sigma2, _ = np.linalg.svd(cov)
    reflect = np.linalg.det(u) < 0
    if reflect.any():
        LOGGER.warning("Received %d reflection matrices from SVD", int(reflect.sum()))
        u[reflect, :, 2] *= -1
    quat = Rotation.from_matrix(u).as_quat()[:, [3, 0, 1, 2]]
    return m, np.sqrt(sigma2), quat


def reference_attributes(
    means: np.ndarray, scales: np.ndarray, quats: np.ndarray, colors: np.ndarray, opacities: np.ndarray,
) -> np.ndarray:
    """Metric Gaussians → the 14 PLY attributes per vertex (float32), computed in float64."""
    c = np.asarray(colors, float)
    srgb = np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(np.maximum(c, 0.0031308), 1 / 2.4) - 0.055)
    o = np.asarray(opacities, float).reshape(-1)
    cols = [np.asarray(means, float), (srgb - 0.5) / SH_C0, np.log(o / (1 - o))[:, None],
            np.log(np.asarray(scales, float)), np.asarray(quats, float)]
    return np.concatenate(cols, axis=1).astype(np.float32)


def reference_save_ply(attributes: np.ndarray, f_px: float, width: int, height: int, path: Path) -> PlyData:
    """Write SHARP's PLY the upstream way: per-vertex tuples into a structured array, then plyfile."""
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rows = [tuple(row) for row in attributes]
    vertex = np.array(rows, dtype=[(name, "f4") for name in names])
    inv_z = (1.0 / attributes[:, 2]).astype(np.float32)
    disparity = np.quantile(inv_z.astype(np.float64), [0.1, 0.9])
    meta = (
        ("extrinsic", np.eye(4).reshape(-1), "f4"),
        ("intrinsic", [f_px, 0, width * 0.5, 0, f_px, height * 0.5, 0, 0, 1], "f4"),
        ("image_size", [width, height], "u4"),
        ("frame", [1, len(rows)], "i4"),
        ("disparity", disparity, "f4"),
        ("color_space", [0], "u1"),
        ("version", [1, 5, 0], "u1"),
    )
    elements = [PlyElement.describe(vertex, "vertex")]
    for name, values, dt in meta:
        elements.append(PlyElement.describe(np.array([(v,) for v in values], dtype=[(name, dt)]), name))
    data = PlyData(elements)
    data.write(str(path))
    return data


# -------------------------------------------------------------------------------------------
# upstream-named torch wrappers


def unproject_gaussians(gaussians_ndc: Gaussians3D, extrinsics: Any, intrinsics: Any,
                        image_shape: tuple[int, int]) -> Gaussians3D:
    """Upstream signature: one 4×4 extrinsics/intrinsics pair for the whole batch."""
    import torch

    outs = []
    for b in range(gaussians_ndc.mean_vectors.shape[0]):
        m, s, q = reference_unproject(
            gaussians_ndc.mean_vectors[b].double().cpu().numpy(),
            gaussians_ndc.singular_values[b].double().cpu().numpy(),
            gaussians_ndc.quaternions[b].double().cpu().numpy(),
            np.asarray(extrinsics.cpu(), float), np.asarray(intrinsics.cpu(), float), image_shape,
        )
        outs.append([torch.from_numpy(x.astype(np.float32)) for x in (m, s, q)])
    stacked = [torch.stack([o[k] for o in outs]) for k in range(3)]
    return Gaussians3D(*stacked, gaussians_ndc.colors.float().cpu(), gaussians_ndc.opacities.float().cpu())


def save_ply(gaussians: Gaussians3D, f_px: float, image_shape: tuple[int, int], path: Path) -> PlyData:
    """Upstream signature: metric Gaussians (batch flattened), ``image_shape`` = (H, W)."""
    height, width = image_shape

    def flat(t: Any, k: int) -> np.ndarray:
        return t.reshape(-1, k).double().cpu().numpy()

    attrs = reference_attributes(flat(gaussians.mean_vectors, 3), flat(gaussians.singular_values, 3),
                                 flat(gaussians.quaternions, 4), flat(gaussians.colors, 3),
                                 flat(gaussians.opacities, 1))
    return reference_save_ply(attrs, f_px, width, height, Path(path))


def load_ply(path: Path) -> tuple[Gaussians3D, SceneMetaData]:
    """Read a SHARP PLY back into metric, linear-colour Gaussians and its metadata."""
    import torch

    ply = PlyData.read(str(path))
    v = ply["vertex"]

    def cols(*names: str) -> np.ndarray:
        return np.stack([np.asarray(v[n], np.float64) for n in names], axis=1)

    srgb = cols("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    opacity = 1.0 / (1.0 + np.exp(-np.asarray(v["opacity"], np.float64)))
    parts = [cols("x", "y", "z"), np.exp(cols("scale_0", "scale_1", "scale_2")),
             cols("rot_0", "rot_1", "rot_2", "rot_3"), linear, opacity]
    tensors = [torch.from_numpy(p.astype(np.float32))[None] for p in parts]
    f_px = float(ply["intrinsic"]["intrinsic"][0])
    width, height = (int(x) for x in ply["image_size"]["image_size"])
    return Gaussians3D(*tensors), SceneMetaData(f_px, (width, height), "sRGB")
