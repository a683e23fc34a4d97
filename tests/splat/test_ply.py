"""SHARP-layout PLY: byte identity with plyfile, round trips, atomic writes and every validation failure."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from plyfile import PlyData

from sharp_dataset_pipeline.errors import PermanentError
from sharp_dataset_pipeline.splat.gaussians import VERTEX_PROPERTIES, Gaussians
from sharp_dataset_pipeline.splat.ply import (
    METADATA_SIZE,
    InvalidSplat,
    encode_ply,
    ply_header,
    read_ply,
    validate_ply,
    write_ply,
)

SHARP_N = 2 * 768 * 768


def _same_scene(a: Gaussians, b: Gaussians) -> None:
    assert a.count == b.count
    np.testing.assert_array_equal(a.vertices, b.vertices)
    assert (a.width, a.height, a.version, a.color_space) == (b.width, b.height, b.version, b.color_space)
    assert np.float32(a.focal_px) == np.float32(b.focal_px)
    assert np.array_equal(np.float32(a.disparity), np.float32(b.disparity))
    np.testing.assert_array_equal(np.asarray(a.extrinsic, np.float32), np.asarray(b.extrinsic, np.float32))


# --- byte identity with plyfile ---------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_encode_is_byte_identical_to_plyfile(make_gaussians, reference_encode, n):
    g = make_gaussians(n, seed=n)
    assert encode_ply(g) == reference_encode(g)


def test_encode_full_sharp_size_is_identical_and_66_061_086_bytes(make_gaussians, reference_encode):
    g = make_gaussians(SHARP_N, seed=1, width=1536, height=1024)
    ours = encode_ply(g)
    assert len(ours) == 66_061_086  # the size every SHARP PLY has (670 header + 66,060,288 + 128)
    assert len(ply_header(SHARP_N)) == 670
    assert ours == reference_encode(g)


def test_header_text_is_what_plyfile_writes(make_gaussians, reference_encode):
    g = make_gaussians(3)
    ref = reference_encode(g)
    assert ply_header(3) == ref[: ref.index(b"end_header\n") + len(b"end_header\n")]


def test_plyfile_reads_our_file_with_sharps_exact_layout(tmp_path, make_gaussians):
    g = make_gaussians(50, seed=3)
    path = tmp_path / "s.ply"
    write_ply(g, path)
    ply = PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"
    names = [e.name for e in ply.elements]
    assert names == ["vertex", "extrinsic", "intrinsic", "image_size", "frame", "disparity", "color_space",
                     "version"]
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == list(VERTEX_PROPERTIES)
    assert all(vertex.data.dtype[p] == np.dtype("<f4") for p in VERTEX_PROPERTIES)
    expected = {"extrinsic": (16, "<f4"), "intrinsic": (9, "<f4"), "image_size": (2, "<u4"),
                "frame": (2, "<i4"), "disparity": (2, "<f4"), "color_space": (1, "u1"), "version": (3, "u1")}
    for name, (count, dt) in expected.items():
        el = ply[name]
        assert el.count == count and [p.name for p in el.properties] == [name]
        assert el.data.dtype[name] == np.dtype(dt)
    assert ply["frame"]["frame"].tolist() == [1, 50]
    assert ply["image_size"]["image_size"].tolist() == [640, 480]
    assert ply["version"]["version"].tolist() == [1, 5, 0]
    np.testing.assert_array_equal(vertex["opacity"], g.vertices[:, 6])
    np.testing.assert_array_equal(vertex["rot_3"], g.vertices[:, 13])
    assert ply["intrinsic"]["intrinsic"][0] == np.float32(g.focal_px)


# --- round trips and writing ------------------------------------------------------------------


def test_round_trip_through_a_file_and_through_bytes(tmp_path, make_gaussians):
    g = make_gaussians(321, seed=5)
    g.extrinsic = np.arange(16, dtype=np.float32).reshape(4, 4)
    g.color_space = 1
    path = tmp_path / "r.ply"
    write_ply(g, path)
    from_path = read_ply(path)
    from_bytes = read_ply(path.read_bytes())
    _same_scene(g, from_path)
    _same_scene(g, from_bytes)
    assert encode_ply(from_path) == path.read_bytes()
    from_bytes.vertices[0, 0] = 42.0  # the result owns writable memory


def test_write_ply_returns_size_and_sha256_and_leaves_no_temp(tmp_path, make_gaussians):
    g = make_gaussians(1234, seed=6)
    path = tmp_path / "w.ply"
    path.write_bytes(b"old content")  # replaced atomically, never appended to
    size, sha = write_ply(g, path, fsync=True)
    data = path.read_bytes()
    assert data == encode_ply(g)
    assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.ply"]


def test_write_ply_failure_removes_its_temp_file(tmp_path, make_gaussians):
    target = tmp_path / "taken"
    target.mkdir()  # os.replace of a file over a directory fails after the data is written
    with pytest.raises(OSError):
        write_ply(make_gaussians(10), target)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_validate_reports_what_the_file_describes(tmp_path, make_gaussians):
    g = make_gaussians(99, seed=7, width=800, height=600)
    path = tmp_path / "v.ply"
    size, _ = write_ply(g, path)
    info = validate_ply(path)
    assert (info.count, info.width, info.height, info.size) == (99, 800, 600, size)
    assert info.focal_px == pytest.approx(g.focal_px, rel=1e-6)
    assert validate_ply(path.read_bytes()) == info


def test_comment_lines_are_tolerated(make_gaussians):
    g = make_gaussians(5)
    data = encode_ply(g).replace(b"format binary_little_endian 1.0\n",
                                 b"format binary_little_endian 1.0\ncomment made elsewhere\n", 1)
    _same_scene(g, read_ply(data))


def test_vertex_only_file_needs_the_documented_opt_in(make_gaussians):
    g = make_gaussians(20, seed=8)
    data = encode_ply(g)
    header_end = data.index(b"end_header\n")
    vertex_header = ply_header(20)[: ply_header(20).index(b"element extrinsic")] + b"end_header\n"
    vertex_only = vertex_header + data[header_end + 11 : len(data) - METADATA_SIZE]
    with pytest.raises(InvalidSplat, match="metadata elements must be"):
        read_ply(vertex_only)
    loose = read_ply(vertex_only, allow_missing_metadata=True)
    np.testing.assert_array_equal(loose.vertices, g.vertices)
    assert (loose.focal_px, loose.width, loose.height) == (0.0, 0, 0)


# --- validation failures ----------------------------------------------------------------------


def _good(n: int = 16) -> bytes:
    v = np.random.default_rng(11).standard_normal((n, 14)).astype(np.float32)
    v[:, 2] = 2.0
    return encode_ply(Gaussians(vertices=v, focal_px=500.0, width=64, height=48))


def _body_offset(data: bytes) -> int:
    return data.index(b"end_header\n") + len(b"end_header\n")


def _set_vertex(data: bytes, row: int, col: int, value: float) -> bytes:
    buf = bytearray(data)
    off = _body_offset(data) + (row * 14 + col) * 4
    buf[off : off + 4] = np.float32(value).tobytes()
    return bytes(buf)


def _set_frame(data: bytes, frames: int, count: int) -> bytes:
    buf = bytearray(data)
    off = len(data) - METADATA_SIZE + 16 * 4 + 9 * 4 + 2 * 4
    buf[off : off + 8] = np.array([frames, count], dtype="<i4").tobytes()
    return bytes(buf)


def _set_focal(data: bytes, focal: float) -> bytes:
    buf = bytearray(data)
    off = len(data) - METADATA_SIZE + 16 * 4
    buf[off : off + 4] = np.float32(focal).tobytes()
    return bytes(buf)


def _swap_header(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data[: _body_offset(data)]
    return data.replace(old, new, 1)


def _hdr(old: bytes, new: bytes):
    return lambda d: _swap_header(d, old, new)


CASES = {
    "zero bytes": (lambda d: b"", "empty file"),
    "garbage": (lambda d: bytes(range(256)) * 4, "not a PLY file"),
    "text that is not ply": (lambda d: b"hello world\n" * 10, "not a PLY file"),
    "no end_header": (lambda d: d[:200], "no 'end_header'"),
    "ascii format": (_hdr(b"binary_little_endian", b"ascii"), "format line"),
    "big endian": (_hdr(b"binary_little_endian", b"binary_big_endian"), "format line"),
    "truncated by one byte": (lambda d: d[:-1], "truncated"),
    "truncated mid vertex block": (lambda d: d[: _body_offset(d) + 100], "truncated"),
    "trailing bytes": (lambda d: d + b"\0\0\0", "trailing bytes"),
    "wrong property order": (
        _hdr(b"property float x\nproperty float y\n", b"property float y\nproperty float x\n"),
        "vertex property #0 must be 'float x', found 'float y'",
    ),
    "double vertex property": (
        _hdr(b"property float opacity", b"property double opacity"),
        "vertex property #6 must be 'float opacity', found 'double opacity'",
    ),
    "missing vertex property": (_hdr(b"property float rot_3\n", b""), "13 vertex properties"),
    "extra vertex property": (_hdr(b"property float rot_3\n", b"property float rot_3\nproperty float nx\n"),
                              "15 vertex properties"),
    "metadata count wrong": (_hdr(b"element frame 2", b"element frame 3"), "element frame must have 2"),
    "metadata type wrong": (
        _hdr(b"property uint image_size", b"property int image_size"), "'uint image_size'"
    ),
    "metadata order wrong": (
        _hdr(
            b"element color_space 1\nproperty uchar color_space\nelement version 3\nproperty uchar version\n",
            b"element version 3\nproperty uchar version\nelement color_space 1\nproperty uchar color_space\n",
        ),
        "metadata elements must be",
    ),
    "list property": (
        _hdr(b"property uchar version\n", b"property list uchar int version\n"), "list property"
    ),
    "vertex not first": (_hdr(b"element vertex", b"element vertexx"), "first element"),
    "bad count": (_hdr(b"element vertex 16", b"element vertex sixteen"), "bad element count"),
    "zero vertices": (_hdr(b"element vertex 16", b"element vertex 0"), "no Gaussians"),
    "nan": (lambda d: _set_vertex(d, 3, 6, float("nan")), "Gaussian 3 property opacity"),
    "+inf": (lambda d: _set_vertex(d, 15, 0, float("inf")), "Gaussian 15 property x"),
    "-inf": (lambda d: _set_vertex(d, 0, 9, float("-inf")), "Gaussian 0 property scale_2"),
    "frame count mismatch": (lambda d: _set_frame(d, 1, 15), "frame says 15 Gaussians"),
    "frame with two frames": (lambda d: _set_frame(d, 2, 16), "frame says 2 frames"),
    "zero focal": (lambda d: _set_focal(d, 0.0), "camera is not usable"),
    "nan focal": (lambda d: _set_focal(d, float("nan")), "intrinsic holds non-finite"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_broken_file_is_invalid_splat_with_a_useful_message(tmp_path, case):
    corrupt, message = CASES[case]
    data = corrupt(_good())
    path = tmp_path / "bad.ply"
    path.write_bytes(data)
    for call in (lambda: validate_ply(path), lambda: read_ply(path), lambda: read_ply(data),
                 lambda: validate_ply(data)):
        with pytest.raises(InvalidSplat, match=message) as info:
            call()
        assert isinstance(info.value, PermanentError) and info.value.reason == "invalid_ply"


def test_the_good_file_used_by_the_failure_cases_is_valid(tmp_path):
    # Without this the failure table could pass on a file that was never valid.
    path = tmp_path / "good.ply"
    path.write_bytes(_good())
    assert validate_ply(path).count == 16
    assert read_ply(path).count == 16


def test_nan_far_into_a_large_file_is_found(tmp_path, make_gaussians):
    g = make_gaussians(600_000, seed=9)  # more than one validation chunk
    g.vertices[555_555, 11] = np.nan
    path = tmp_path / "big.ply"
    write_ply(g, path)
    with pytest.raises(InvalidSplat, match="Gaussian 555555 property rot_1"):
        validate_ply(path)
