"""The fast unprojection against the documented slow upstream method, through real PLY files.

The reference (``tests/standins/sharp/utils/gaussians.py``) builds the affine map from 4×4
matrices, decomposes float64 covariances by SVD with the reflection fix, converts rotations with
SciPy and writes per-vertex tuples through plyfile. Both results are written to disk and read
back with plyfile; means, colours, opacities and metadata must agree to float32 precision and
the covariances rebuilt from (scale, rotation) within 1e-5 relative.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData
from scipy.spatial.transform import Rotation

from sharp_dataset_pipeline.errors import PermanentError
from sharp_dataset_pipeline.splat.gaussians import VERTEX_PROPERTIES
from sharp_dataset_pipeline.splat.ply import validate_ply, write_ply
from sharp_dataset_pipeline.splat.unproject import NdcSplat, unproject

_REF_PATH = Path(__file__).resolve().parents[1] / "standins" / "sharp" / "utils" / "gaussians.py"
_spec = importlib.util.spec_from_file_location("standin_sharp_gaussians", _REF_PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

CAMERAS = [  # (width, height, focal px): landscape phone, portrait, square, very narrow
    (4032, 3024, 3000.0),
    (600, 1200, 700.0),
    (1536, 1536, 1400.0),
    (333, 2000, 250.5),
]


def ndc_scene(n: int, seed: int) -> dict[str, np.ndarray]:
    """Random NDC Gaussians plus the awkward cases, float32 like the network's output."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.5, 30.0, n)
    means = np.stack([rng.uniform(-1.2, 1.2, n) * z, rng.uniform(-1.2, 1.2, n) * z, z], 1)
    scales = np.exp(rng.uniform(np.log(1e-4), 0.0, (n, 3)))
    quats = rng.standard_normal((n, 4))
    k = n // 10
    scales[:k] = scales[:k, :1]  # spheres: all three scales equal
    scales[k:2 * k, 1] = scales[k:2 * k, 0]  # disks / needles: two equal
    scales[2 * k:3 * k, 1] = scales[2 * k:3 * k, 0] * (1 + 1e-6)  # nearly equal
    scales[3 * k:4 * k, 2] = scales[3 * k:4 * k, 0] * 1e-4  # very flat
    quats[4 * k:5 * k] = [1.0, 0.0, 0.0, 0.0]  # axis-aligned: D keeps Σ diagonal
    quats[5 * k:5 * k + k // 2] = [0.0, 0.0, 0.0, 1.0]  # 180° turn, w = 0
    quats[6 * k:7 * k] *= 1e-3  # unnormalised
    return {
        "means": means.astype(np.float32),
        "scales": scales.astype(np.float32),
        "quats": quats.astype(np.float32),
        "colors": rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32) ** 2,
        "opacities": rng.uniform(0.01, 0.99, n).astype(np.float32),
    }


def reference_file(scene: dict[str, np.ndarray], w: int, h: int, f: float, path: Path) -> None:
    m, s, q = ref.reference_unproject(scene["means"], scene["scales"], scene["quats"], np.eye(4),
                                      ref.internal_intrinsics(f, w, h), (1536, 1536))
    attrs = ref.reference_attributes(m, s, q, scene["colors"], scene["opacities"])
    ref.reference_save_ply(attrs, f, w, h, path)


def covariances(vertex) -> np.ndarray:
    log_s = np.stack([np.asarray(vertex[f"scale_{i}"], np.float64) for i in range(3)], 1)
    quat = np.stack([np.asarray(vertex[f"rot_{i}"], np.float64) for i in range(4)], 1)
    rot = Rotation.from_quat(quat[:, [1, 2, 3, 0]]).as_matrix()
    return (rot * np.exp(2 * log_s)[:, None, :]) @ rot.transpose(0, 2, 1)


def assert_same_splat(ours: Path, theirs: Path) -> None:
    a, b = PlyData.read(str(ours)), PlyData.read(str(theirs))
    header_a = ours.read_bytes().split(b"end_header\n")[0]
    assert header_a == theirs.read_bytes().split(b"end_header\n")[0]
    va, vb = a["vertex"], b["vertex"]
    for name in ("x", "y", "z"):
        np.testing.assert_allclose(va[name], vb[name], rtol=3e-7, atol=0, err_msg=name)
    for name in ("f_dc_0", "f_dc_1", "f_dc_2", "opacity"):
        np.testing.assert_allclose(va[name], vb[name], rtol=1e-6, atol=1e-6, err_msg=name)
    ca, cb = covariances(va), covariances(vb)
    rel = np.linalg.norm(ca - cb, axis=(1, 2)) / np.linalg.norm(cb, axis=(1, 2))
    assert rel.max() <= 1e-5, f"worst covariance error {rel.max():.3g} at Gaussian {rel.argmax()}"
    for name in ("extrinsic", "intrinsic", "image_size", "frame", "color_space", "version"):
        np.testing.assert_array_equal(a[name][name], b[name][name], err_msg=name)
    np.testing.assert_allclose(a["disparity"]["disparity"], b["disparity"]["disparity"], rtol=1e-6)


@pytest.mark.parametrize(("width", "height", "focal"), CAMERAS)
def test_matches_upstream_method(tmp_path: Path, width: int, height: int, focal: float,
                                 caplog: pytest.LogCaptureFixture) -> None:
    scene = ndc_scene(20_000, seed=width)
    with caplog.at_level(logging.WARNING, logger="sharp.utils.gaussians"):
        reference_file(scene, width, height, focal, tmp_path / "ref.ply")
    assert "reflection matrices" in caplog.text  # the reflection fix is exercised
    g = unproject(**scene, focal_px=focal, width=width, height=height)
    write_ply(g, tmp_path / "ours.ply")
    assert_same_splat(tmp_path / "ours.ply", tmp_path / "ref.ply")
    validate_ply(tmp_path / "ours.ply")


def test_rotations_are_unit_and_scales_ordered() -> None:
    scene = ndc_scene(5_000, seed=3)
    v = unproject(**scene, focal_px=900.0, width=1200, height=800).vertices
    np.testing.assert_allclose(np.linalg.norm(v[:, 10:14], axis=1), 1.0, atol=1e-6)
    assert (v[:, 10] >= 0).all()
    assert (v[:, 7] >= v[:, 8]).all()


def test_flat_gaussians_keep_their_thickness() -> None:
    # s = (1, 1, 1e-5): the float32 covariance cannot hold the thin axis; the determinant can.
    n = 64
    rng = np.random.default_rng(5)
    scales = np.tile(np.array([[0.5, 0.3, 5e-6]], np.float32), (n, 1))
    quats = rng.standard_normal((n, 4)).astype(np.float32)
    means = np.tile(np.array([[0.0, 0.0, 2.0]], np.float32), (n, 1))
    g = unproject(means, scales, quats, np.full((n, 3), 0.5, np.float32), np.full(n, 0.5, np.float32),
                  focal_px=1000.0, width=1000, height=1000)
    # D = diag(0.5, 0.5, 1) with a square image: det Σ' = (0.25 · 0.5 · 0.3 · 5e-6)².
    thickness = np.exp(g.vertices[:, 7:10].astype(np.float64)).prod(axis=1)
    np.testing.assert_allclose(thickness, 0.25 * 0.5 * 0.3 * 5e-6, rtol=1e-3)


def test_float64_fallback_gives_the_same_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = ndc_scene(4_000, seed=11)
    w, h, f = 1000, 750, 800.0
    reference_file(scene, w, h, f, tmp_path / "ref.ply")
    # Count the matrices handed to float64 eigh (numpy's, passed through unchanged): that is the fallback.
    solved: list[tuple[int, np.dtype]] = []
    real_eigh = np.linalg.eigh

    def counting_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        solved.append((a.shape[0], a.dtype))
        return real_eigh(a)

    monkeypatch.setattr(np.linalg, "eigh", counting_eigh)
    normal = unproject(**scene, focal_px=f, width=w, height=h)
    assert sum(n for n, _ in solved) < 40, "the float32 path should resolve nearly every matrix itself"
    solved.clear()
    # Tolerance 0: every matrix whose float32 residual is not exactly 0 falls back (seen: 3190 of 4000).
    forced = unproject(**scene, focal_px=f, width=w, height=h, residual_tol=0.0)
    assert sum(n for n, _ in solved) > 3_000 and all(dt == np.float64 for _, dt in solved), solved
    # The two paths really computed the rotations differently (not bit-equal), yet agree with the reference.
    assert not np.array_equal(forced.vertices[:, 10:14], normal.vertices[:, 10:14])
    write_ply(forced, tmp_path / "forced.ply")
    assert_same_splat(tmp_path / "forced.ply", tmp_path / "ref.ply")


def test_chunk_boundaries_do_not_matter() -> None:
    scene = ndc_scene(1_001, seed=2)
    whole = unproject(**scene, focal_px=500.0, width=640, height=480)
    pieces = unproject(**scene, focal_px=500.0, width=640, height=480, chunk=7)
    np.testing.assert_array_equal(whole.vertices, pieces.vertices)
    assert whole.disparity == pieces.disparity


@pytest.mark.parametrize("field", ["means", "scales", "quats", "colors", "opacities"])
def test_non_finite_prediction_is_a_permanent_failure(field: str) -> None:
    scene = ndc_scene(300, seed=4)
    scene[field].reshape(-1)[17] = np.nan
    with pytest.raises(PermanentError) as err:
        unproject(**scene, focal_px=500.0, width=640, height=480)
    assert err.value.reason == "non_finite_prediction"


def test_zero_quaternion_is_a_permanent_failure() -> None:
    scene = ndc_scene(300, seed=4)
    scene["quats"][5] = 0.0
    with pytest.raises(PermanentError):
        unproject(**scene, focal_px=500.0, width=640, height=480)


def test_zero_width_gaussian_stays_finite(tmp_path: Path) -> None:
    scene = ndc_scene(300, seed=6)
    scene["scales"][3] = [0.1, 0.0, 0.0]
    g = unproject(**scene, focal_px=500.0, width=640, height=480)
    assert np.isfinite(g.vertices).all()
    write_ply(g, tmp_path / "z.ply")
    validate_ply(tmp_path / "z.ply")


def test_bad_shapes_and_camera_are_rejected() -> None:
    scene = ndc_scene(10, seed=1)
    with pytest.raises(ValueError, match="quats"):
        unproject(scene["means"], scene["scales"], scene["quats"][:, :3], scene["colors"], scene["opacities"],
                  focal_px=500.0, width=640, height=480)
    with pytest.raises(ValueError, match="focal"):
        unproject(**scene, focal_px=0.0, width=640, height=480)


def test_ndc_splat_pickles_and_unprojects_in_a_worker() -> None:
    scene = ndc_scene(500, seed=8)
    splat = NdcSplat(**scene, focal_px=640.0, width=800, height=600)
    copy = pickle.loads(pickle.dumps(splat))
    np.testing.assert_array_equal(copy.to_gaussians().vertices, splat.to_gaussians().vertices)
    g = splat.to_gaussians()
    assert (g.width, g.height, g.focal_px, g.count) == (800, 600, 640.0, 500)
    assert g.vertices.shape[1] == len(VERTEX_PROPERTIES)


def test_torch_path_matches_numpy_path() -> None:
    torch = pytest.importorskip("torch")
    scene = ndc_scene(20_000, seed=9)
    w, h, f = 4032, 3024, 3000.0
    cpu = unproject(**scene, focal_px=f, width=w, height=h)
    dev = unproject_torch_from(torch, scene, f, w, h)
    np.testing.assert_allclose(dev.vertices[:, :7], cpu.vertices[:, :7], rtol=2e-6, atol=2e-6)
    a = (Rotation.from_quat(dev.vertices[:, [11, 12, 13, 10]]).as_matrix(),
         np.exp(dev.vertices[:, 7:10].astype(np.float64)))
    b = (Rotation.from_quat(cpu.vertices[:, [11, 12, 13, 10]]).as_matrix(),
         np.exp(cpu.vertices[:, 7:10].astype(np.float64)))
    ca = (a[0] * (a[1] ** 2)[:, None, :]) @ a[0].transpose(0, 2, 1)
    cb = (b[0] * (b[1] ** 2)[:, None, :]) @ b[0].transpose(0, 2, 1)
    rel = np.linalg.norm(ca - cb, axis=(1, 2)) / np.linalg.norm(cb, axis=(1, 2))
    assert rel.max() <= 1e-5
    np.testing.assert_allclose(dev.disparity, cpu.disparity, rtol=1e-6)


def unproject_torch_from(torch, scene: dict[str, np.ndarray], f: float, w: int, h: int):
    from sharp_dataset_pipeline.splat.unproject import unproject_torch

    tensors = {k: torch.from_numpy(v) for k, v in scene.items()}
    return unproject_torch(**tensors, focal_px=f, width=w, height=h)
