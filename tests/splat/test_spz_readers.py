"""Every ``.spz`` we write reads back through independent decoders, within SPZ's quantisation of the input:

- splat-transform (the pinned npm package; its SPZ reader is its own JavaScript): our ``.spz`` → its ``.ply``;
- Niantic's reference C++ library through the PyPI package ``alspz`` (pinned in the ``spz-reference``
  extra; skipped where it is not installed, see README: tests).

And the other way: splat-transform's writer (Niantic's library compiled to WebAssembly) produces exactly our
attribute bytes for the same random scenes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from spz_scenes import assert_within_quantisation, ply_bytes, random_scene, read_ply_columns

from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.splat import convert as cv
from sharp_dataset_pipeline.splat import spz

REPO = Path(__file__).resolve().parents[2]


def _tool() -> cv.SplatTransform:
    try:
        return cv.locate_splat_transform("", search_roots=[REPO])
    except ConfigError as exc:
        pytest.skip(f"splat-transform is not installed (run `npm ci` in the repository root): {exc}")


def _streams(data: bytes) -> list[bytes]:
    if data[:2] == b"\x1f\x8b":
        return spz._split_legacy(gzip.decompress(data))[1]
    return spz._split_v4(data)[1]


@pytest.mark.parametrize("version, degree, seed", [(4, 0, 20), (3, 0, 21), (4, 3, 22), (3, 1, 23)])
def test_splat_transform_reads_our_spz_back_within_quantisation(tmp_path, version, degree, seed):
    src = random_scene(3000, seed, sh_degree=degree)
    ours = tmp_path / "ours.spz"
    ours.write_bytes(spz.encode_spz(src, version=version))
    cv.convert(_tool(), ours, tmp_path / "back.ply")
    back = read_ply_columns(tmp_path / "back.ply")
    assert back.sh_degree == degree
    assert_within_quantisation(src, back, 12)


@pytest.mark.parametrize("degree", [0, 3])
def test_splat_transforms_writer_makes_our_attribute_bytes(tmp_path, degree):
    src = random_scene(3000, 30 + degree, sh_degree=degree)
    (tmp_path / "in.ply").write_bytes(ply_bytes(src))
    cv.convert(_tool(), tmp_path / "in.ply", tmp_path / "theirs.spz")
    theirs = (tmp_path / "theirs.spz").read_bytes()
    assert _streams(spz.encode_spz(src)) == _streams(theirs)
    assert theirs[:32] == spz.encode_spz(src)[:32]  # same header: version, count, degree, 12 bits, 5 or 6 streams
    assert spz.encode_spz(src, zstd_level=spz.REFERENCE_ZSTD_LEVEL) == theirs  # at the reference's zstd level


# -- Niantic's reference implementation (C++) ------------------------------------------------------


def _alspz():
    return pytest.importorskip("alspz", reason="the spz-reference extra (alspz, Niantic's C++) is not installed")


def _from_alspz(d: dict) -> spz.SplatArrays:
    """alspz's dict (Niantic's GaussianCloud: x, y, z, w quaternions, SH interleaved by colour) in our terms."""
    sh = d["sh"]
    if sh is not None:
        n, width = sh.shape
        sh = np.ascontiguousarray(sh.reshape(n, width // 3, 3).transpose(0, 2, 1).reshape(n, width))
    return spz.SplatArrays(positions=d["positions"], colors=d["colors"], alphas=d["alphas"], scales=d["scales"],
                           rotations=d["rotations"][:, [3, 0, 1, 2]], sh_rest=sh)


@pytest.mark.parametrize("version, degree, seed", [(4, 0, 40), (3, 0, 41), (4, 2, 42), (3, 3, 43)])
def test_niantics_reference_reads_our_spz_back_within_quantisation(version, degree, seed):
    alspz = _alspz()
    src = random_scene(5000, seed, sh_degree=degree)
    decoded = alspz.load_spz(spz.encode_spz(src, version=version))
    assert decoded["num_points"] == src.count and decoded["sh_degree"] == degree
    assert_within_quantisation(src, _from_alspz(decoded), 12)


@pytest.mark.parametrize("version", [4, 3])
def test_niantics_reference_writer_makes_our_attribute_bytes(version):
    alspz = _alspz()
    src = random_scene(5000, 50 + version, sh_degree=3)
    n, width = src.sh_rest.shape
    sh = src.sh_rest.reshape(n, 3, width // 3).transpose(0, 2, 1).reshape(n, width)
    theirs = alspz.save_spz(src.positions, src.scales, src.rotations[:, [1, 2, 3, 0]], src.alphas, src.colors, sh,
                            3, version=version)
    assert _streams(spz.encode_spz(src, version=version)) == _streams(theirs)


def test_a_scene_with_fewer_fractional_bits_reads_back_in_both(tmp_path):
    src = random_scene(2000, 60)
    pos = src.positions.copy()
    pos[0] = [-30000.0, 12.5, 70000.0]  # needs 6 fractional bits (±131072)
    src = spz.SplatArrays(pos, src.colors, src.alphas, src.scales, src.rotations)
    data = spz.encode_spz(src)
    assert spz.decode_spz(data).fractional_bits == 6
    (tmp_path / "far.spz").write_bytes(data)
    cv.convert(_tool(), tmp_path / "far.spz", tmp_path / "far.ply")
    assert_within_quantisation(src, read_ply_columns(tmp_path / "far.ply"), 6)
    try:
        import alspz
    except ImportError:
        return
    assert_within_quantisation(src, _from_alspz(alspz.load_spz(data)), 6)
