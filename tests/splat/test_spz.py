"""Our SPZ writer and reader (``splat/spz.py``): round trips within SPZ's quantisation, golden bytes
against fixtures made once by splat-transform (Niantic's reference library inside; see
``scripts/make_spz_fixtures.py``), and clear errors for scenes SPZ cannot hold.

The independent decoders (splat-transform, Niantic's C++ through ``alspz``) are in ``test_spz_readers.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from spz_scenes import assert_within_quantisation, golden_scene, random_scene

from sharp_dataset_pipeline.splat import spz

DATA = Path(__file__).resolve().parent / "data"

# sha256 of our encoding of the golden scenes: the same bytes on every run (v4 depends on the pinned
# zstandard's zstd, v3 on zlib's deflate; a change of either shows up here first).
GOLDEN_SHA256 = {
    (0, 4): "a5bc8b63d93c1ba6028e4c3e21fc0d5fea9898cabb1303b2e2ccbcda7d8f4b1c",
    (0, 3): "0aa568bca0f3cb6d3047dd107e5cfb9c46aa61eb86e14d3a335347d36816622c",
    (3, 4): "2893cdcf8f7a322e82797aabc856170d7bac43ebab613e37d9b61598dec67d87",
    (3, 3): "8d93a06345df6af2461dac3ab57414cae25ffdbb9935033e402799a4fa2ac807",
}


def _streams(data: bytes) -> list[bytes]:
    if data[:2] == b"\x1f\x8b":
        return spz._split_legacy(gzip.decompress(data))[1]
    return spz._split_v4(data)[1]


@pytest.mark.parametrize("version", [4, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_round_trip_within_quantisation(version, seed):
    src = random_scene(4000, seed)
    data = spz.encode_spz(src, version=version)
    got = spz.decode_spz(data)
    assert (got.version, got.fractional_bits, got.scene.sh_degree) == (version, 12, 0)
    assert_within_quantisation(src, got.scene, 12)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_higher_sh_bands_round_trip(degree):
    src = random_scene(1500, 10 + degree, sh_degree=degree)
    got = spz.decode_spz(spz.encode_spz(src))
    assert got.scene.sh_degree == degree and got.scene.sh_rest.shape == src.sh_rest.shape
    assert_within_quantisation(src, got.scene, 12)


def test_the_container_layout_is_the_documented_one():
    src = random_scene(500, 3)
    v4 = spz.encode_spz(src, version=4)
    magic, version, n, degree, bits, flags, streams, toc = struct.unpack_from("<4sIIBBBBI", v4)
    assert (magic, version, n, degree, bits, flags, streams, toc) == (b"NGSP", 4, 500, 0, 12, 0, 5, 32)
    assert v4[20:32] == bytes(12)
    sizes = [struct.unpack_from("<QQ", v4, 32 + 16 * i) for i in range(5)]
    assert [u for _, u in sizes] == [9 * 500, 500, 3 * 500, 3 * 500, 4 * 500]
    assert 32 + 16 * 5 + sum(c for c, _ in sizes) == len(v4)
    raw = gzip.decompress(spz.encode_spz(src, version=3))
    assert raw[:16] == b"NGSP" + struct.pack("<IIBBBB", 3, 500, 0, 12, 0, 0)
    assert len(raw) == 16 + 500 * (9 + 1 + 3 + 3 + 4)
    assert _streams(v4) == _streams(spz.encode_spz(src, version=3))[:5] + [b""]


def test_positions_are_little_endian_24_bit_fixed_point():
    s = golden_scene(0, n=3)
    s = replace(s, positions=np.array([[1.0, -1.0, 0.5], [2047.0, -2048.0, 1 / 4096], [0, 0, 0]], np.float32))
    pos = np.frombuffer(_streams(spz.encode_spz(s))[0], np.uint8).reshape(-1, 3)
    as_int = pos[:, 0].astype(np.int64) | pos[:, 1].astype(np.int64) << 8 | pos[:, 2].astype(np.int64) << 16
    as_int = np.where(as_int >= 1 << 23, as_int - (1 << 24), as_int)
    assert as_int.tolist() == [4096, -4096, 2048, 2047 * 4096, -2048 * 4096, 1, 0, 0, 0]


def test_the_smallest_three_word_matches_a_hand_computed_one():
    # q = (w, x, y, z) = (0.8, 0.6, 0, 0) normalised: largest is w (index 3 in x, y, z, w order).
    s = replace(golden_scene(0, n=1), rotations=np.array([[0.8, -0.6, 0.0, 0.0]], np.float32))
    word = struct.unpack("<I", _streams(spz.encode_spz(s))[4])[0]
    mag = int(511 * (0.6 / np.sqrt(0.5)) + 0.5)
    assert word == (3 << 30) | ((1 << 9 | mag) << 20)  # x negative, y = z = 0
    again = spz.decode_spz(spz.encode_spz(s)).scene.rotations[0]
    assert again == pytest.approx([0.8, -0.6, 0, 0], abs=1e-3)


# -- golden bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("degree", [0, 3])
@pytest.mark.parametrize("version", [4, 3])
def test_golden_scene_encodes_to_the_same_bytes_every_run(degree, version):
    first = spz.encode_spz(golden_scene(degree), version=version)
    assert spz.encode_spz(golden_scene(degree), version=version) == first
    assert hashlib.sha256(first).hexdigest() == GOLDEN_SHA256[(degree, version)]


@pytest.mark.parametrize("degree", [0, 3])
@pytest.mark.parametrize("version", [4, 3])
def test_golden_scene_matches_the_independent_encoders_fixture(degree, version):
    """The fixture was written by splat-transform 3.7.0 (scripts/make_spz_fixtures.py)."""
    fixture = (DATA / f"golden_sh{degree}_v{version}.spz").read_bytes()
    ours = spz.encode_spz(golden_scene(degree), version=version)
    assert _streams(ours) == _streams(fixture)  # every attribute byte
    # With the reference's zstd level (12; v3 uses zlib's default either way) the whole file is the same.
    assert spz.encode_spz(golden_scene(degree), version=version, zstd_level=spz.REFERENCE_ZSTD_LEVEL) == fixture
    a, b = spz.decode_spz(ours), spz.decode_spz(fixture)
    assert (a.version, a.fractional_bits, a.scene.sh_degree) == (b.version, b.fractional_bits, b.scene.sh_degree)
    for name in ("positions", "colors", "alphas", "scales", "rotations", "sh_rest"):
        np.testing.assert_array_equal(getattr(a.scene, name), getattr(b.scene, name), err_msg=name)
    assert_within_quantisation(golden_scene(degree), b.scene, 12)


# -- what SPZ cannot hold --------------------------------------------------------------------------


def test_a_scene_beyond_2048_units_gets_fewer_fractional_bits_not_wrapped_coordinates():
    src = random_scene(2000, 5, far=1000.0)
    pos = src.positions.copy()
    pos[7] = [3000.5, -5000.25, 9000.0]  # beyond 12 bits' ±2048; fits with 9 (±16384)
    src = replace(src, positions=pos)
    got = spz.decode_spz(spz.encode_spz(src))
    assert got.fractional_bits == 9
    assert_within_quantisation(src, got.scene, 9)
    assert got.scene.positions[7] == pytest.approx([3000.5, -5000.25, 9000.0], abs=spz.position_step(9))


def test_the_fractional_bits_are_the_most_that_fit():
    p = np.array([[2047.9, 0, 0]], np.float32)
    assert spz.choose_fractional_bits(p) == 12
    assert spz.choose_fractional_bits(p * 2) == 11
    assert spz.choose_fractional_bits(np.array([[-2048.0, 0, 0]], np.float32)) == 12
    assert spz.choose_fractional_bits(np.array([[0, 2048.0, 0]], np.float32)) == 11
    assert spz.choose_fractional_bits(np.array([[0, 0, 8_000_000.0]], np.float32)) == 0


def test_positions_beyond_the_fixed_point_range_are_an_error():
    s = golden_scene(0)
    pos = s.positions.copy()
    pos[3, 1] = 9e6
    with pytest.raises(spz.SpzError, match="24-bit fixed point"):
        spz.encode_spz(replace(s, positions=pos))
    with pytest.raises(spz.SpzError, match="do not fit"):
        spz.encode_spz(replace(s, positions=pos / 1000), fractional_bits=12)


@pytest.mark.parametrize("name", ["positions", "colors", "alphas", "scales", "rotations"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_an_error(name, bad):
    s = golden_scene(0)
    arr = getattr(s, name).copy()
    arr.reshape(len(arr), -1)[5, 0] = bad
    with pytest.raises(spz.SpzError, match=f"{name} holds 1 non-finite values .* at Gaussian 5"):
        spz.encode_spz(replace(s, **{name: arr}))


def test_a_zero_quaternion_and_an_empty_scene_are_errors():
    s = golden_scene(0)
    rot = s.rotations.copy()
    rot[4] = 0
    with pytest.raises(spz.SpzError, match="Gaussian 4 has a zero quaternion"):
        spz.encode_spz(replace(s, rotations=rot))
    empty = spz.SplatArrays(*(np.zeros((0,) + a.shape[1:], np.float32) for a in
                              (s.positions, s.colors, s.alphas, s.scales, s.rotations)))
    with pytest.raises(spz.SpzError, match="no Gaussians"):
        spz.encode_spz(empty)
    with pytest.raises(spz.SpzError, match="version"):
        spz.encode_spz(s, version=2)


@pytest.mark.parametrize("cut", [0, 10, 31, 100, -1])
def test_a_damaged_file_is_an_error(cut):
    data = spz.encode_spz(golden_scene(0))
    with pytest.raises(spz.SpzError):
        spz.decode_spz(data[:cut])
    with pytest.raises(spz.SpzError):
        spz.decode_spz(spz.encode_spz(golden_scene(0), version=3)[:cut])


def test_a_small_gzip_bomb_is_read_no_further_than_its_header_allows():
    """A v3 file is one gzip stream: a few KB can inflate to gigabytes. The reader takes the header
    first, then at most what its count needs, so a bomb is refused without being expanded, and a
    header asking for more Gaussians than the reader takes is refused before any stream is read."""
    import gzip
    import struct
    import tracemalloc

    good = spz.decode_spz(spz.encode_spz(golden_scene(0), version=3))
    n = good.scene.positions.shape[0]
    payload = gzip.decompress(spz.encode_spz(golden_scene(0), version=3))
    bomb = gzip.compress(payload + bytes(256 << 20), compresslevel=1)  # 256 MB of zeros after the arrays
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(spz.SpzError, match="1 MiB more than its Gaussians need"):
            spz.decode_spz(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20  # never the 256 MB
    huge = struct.pack("<4sIIBBBB", b"NGSP", 3, spz.MAX_READ_GAUSSIANS + 1, 0, 12, 0, 0)
    for data in (gzip.compress(huge + bytes(64)),
                 struct.pack("<4sIIBBBBI12x", b"NGSP", 4, spz.MAX_READ_GAUSSIANS + 1, 0, 12, 0, 5, 32)):
        with pytest.raises(spz.SpzError, match="more than the"):
            spz.decode_spz(data)
    assert spz.decode_spz(gzip.compress(payload + bytes(100))).scene.positions.shape[0] == n  # a little slack is read
