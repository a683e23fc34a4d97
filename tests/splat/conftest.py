"""Shared builders for the splat tests: random SHARP-layout scenes and plyfile's own encoding."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from sharp_dataset_pipeline.splat.gaussians import VERTEX_PROPERTIES, Gaussians


def random_gaussians(n: int, seed: int = 0, width: int = 640, height: int = 480) -> Gaussians:
    """A scene with random but plausible values (z > 0) and SHARP-like metadata."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 14)).astype(np.float32)
    v[:, 2] = rng.uniform(0.5, 20.0, n).astype(np.float32)
    return Gaussians(vertices=v, focal_px=float(rng.uniform(300, 2000)), width=width, height=height)


def plyfile_encode(g: Gaussians) -> bytes:
    """The file as ml-sharp's save_ply produces it: plyfile, structured arrays, one element each."""
    vertex = np.empty(g.count, dtype=[(name, "f4") for name in VERTEX_PROPERTIES])
    for i, name in enumerate(VERTEX_PROPERTIES):
        vertex[name] = g.vertices[:, i]
    elements = [PlyElement.describe(vertex, "vertex")]
    meta = (
        ("extrinsic", np.asarray(g.extrinsic, dtype="f4").reshape(-1), "f4"),
        ("intrinsic", g.intrinsic, "f4"),
        ("image_size", [g.width, g.height], "u4"),
        ("frame", [1, g.count], "i4"),
        ("disparity", list(g.disparity), "f4"),
        ("color_space", [g.color_space], "u1"),
        ("version", list(g.version), "u1"),
    )
    for name, values, dt in meta:
        arr = np.empty(len(values), dtype=[(name, dt)])
        arr[name] = np.asarray(values, dtype=dt)
        elements.append(PlyElement.describe(arr, name))
    buf = io.BytesIO()
    PlyData(elements).write(buf)
    return buf.getvalue()


@pytest.fixture
def make_gaussians() -> Callable[..., Gaussians]:
    return random_gaussians


@pytest.fixture
def reference_encode() -> Callable[[Gaussians], bytes]:
    return plyfile_encode
