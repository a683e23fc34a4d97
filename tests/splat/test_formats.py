"""Publishable formats: every format made from a planar-predictor splat and from a SHARP-size
(1,179,648-Gaussian) scene reads back through splat-transform with the right count and statistics;
the small PLY keeps exactly the top N with SHARP's metadata; the preview looks like the photo;
broken files are caught by the structural checks; failures clean up after themselves.

Read-back tolerances are the formats' quantisation steps with a margin (measured deltas in brackets):
positions 1e-3 + 1e-3·range (SPZ stores 12 fractional bits, 2.4e-4 [1e-4]); scales 5 % (SPZ stores
log-scale in 1/16 steps, ±3.2 % [2 %]); opacity 0.01 (8 bits, but splat-transform's mean is
sigmoid(mean logit), which magnifies steps near 0 and 1 [0.005]); colour 0.01 (8 bits [0.002]).
Rotations are compared only for the planar scene (identity quaternions): for random ones the writers
store q or -q (the same rotation), which moves the column statistics without changing the splat.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharp_dataset_pipeline.errors import ConfigError, PermanentError, TransientError
from sharp_dataset_pipeline.predict.planar import lift_to_plane
from sharp_dataset_pipeline.splat import convert as cv
from sharp_dataset_pipeline.splat import formats as fm
from sharp_dataset_pipeline.splat.filter import visibility_log_score
from sharp_dataset_pipeline.splat.gaussians import Gaussians, f_dc_from_srgb, logit
from sharp_dataset_pipeline.splat.ply import read_ply, write_ply

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "src" / "sharp_dataset_pipeline" / "samples"
CONVERTED = ("spz", "sog", "compressed.ply", "html")
PREVIEW_MAD_MAX = 12.0  # see test_the_preview_looks_like_the_photo


def _tool() -> cv.SplatTransform:
    try:
        return cv.locate_splat_transform("", search_roots=[REPO])
    except ConfigError as exc:
        pytest.skip(f"splat-transform is not installed (run `npm ci` in the repository root): {exc}")


def _photo(name: str = "boxes") -> np.ndarray:
    return np.asarray(Image.open(SAMPLES / f"{name}.jpg").convert("RGB"))


def _planar(name: str = "boxes") -> Gaussians:
    rgb = _photo(name)
    h, w = rgb.shape[:2]
    return lift_to_plane(rgb, 1.2 * max(w, h), w, h, 256)


def sharp_size_scene(side: int = 768, seed: int = 0) -> Gaussians:
    """SHARP's shape: two layers of 768 × 768 Gaussians unprojected through a 1536 × 1024 photo's camera."""
    w, h, f = 1536, 1024, 1400.0
    rng = np.random.default_rng(seed)
    gy, gx = np.mgrid[0:side, 0:side].astype(np.float32)
    u, v = ((gx + 0.5) * w / side).reshape(-1), ((gy + 0.5) * h / side).reshape(-1)
    depth = (2.0 + 3.0 * gy / side + 0.3 * np.sin(gx / 40.0)).reshape(-1)
    colour = np.stack([gx / side, gy / side, 0.5 + 0.5 * np.sin(gx / 25.0)], -1).reshape(-1, 3)
    blocks = []
    for dz, alpha in ((0.0, 0.9), (0.6, 0.5)):
        z = depth + dz
        n = z.size
        xyz = np.stack([(u - w / 2) * z / f, (v - h / 2) * z / f, z], -1)
        q = rng.standard_normal((n, 4))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        log_s = np.log(z * (w / side) / f * 0.6)[:, None] + rng.normal(0, 0.2, (n, 3))
        col = np.clip(colour + rng.normal(0, 0.03, (n, 3)), 0, 1)
        op = logit(np.clip(alpha + rng.normal(0, 0.1, n), 0.01, 0.99))
        blocks.append(np.concatenate([xyz, f_dc_from_srgb(col), op[:, None], log_s, q], 1).astype(np.float32))
    return Gaussians(vertices=np.concatenate(blocks), focal_px=f, width=w, height=h)


def _made(tmp: Path, g: Gaussians, formats: tuple[str, ...], **kw) -> dict[str, fm.ExtraFile]:
    ply = tmp / "item.ply"
    write_ply(g, ply)
    opts = fm.FormatOptions(formats=formats, deep_check=True, **kw)
    return {f.kind: f for f in fm.make_extra_files(g, ply, "item", tmp / "out", opts)}


def _embedded_sog(html: Path, out: Path) -> Path:
    match = re.search(rb'"contentUrl":"data:[^;"]*;base64,([^"]*)"', html.read_bytes())
    assert match is not None
    out.write_bytes(base64.b64decode(match.group(1)))
    return out


def _assert_stats_close(src: dict[str, cv.ColumnStats], got: dict[str, cv.ColumnStats], with_rot: bool) -> None:
    for col, a in src.items():
        if col.startswith("rot_") and not with_rot:
            continue
        b = got[col]
        assert b.nan_count == 0 and b.inf_count == 0, col
        for what in ("min", "max", "mean"):
            x, y = getattr(a, what), getattr(b, what)
            if col in ("x", "y", "z"):
                tol = 1e-3 + 1e-3 * (a.max - a.min)
            elif col.startswith("scale_"):
                tol = 0.05 * abs(x)
            else:  # opacity, colour, rotation: all in [-1, 1]
                tol = 0.01
            assert abs(x - y) <= tol, f"{col} {what}: source {x}, read back {y} (tolerance {tol:.3g})"


def _read_back(tool: cv.SplatTransform, made: dict[str, fm.ExtraFile], src_ply: Path, tmp: Path,
               with_rot: bool, count: int) -> None:
    src = cv.column_stats(cv.read_stats(tool, src_ply))
    for fmt in CONVERTED:
        f = made[fm.KINDS[fmt]]
        path = _embedded_sog(f.local_path, tmp / "embedded.sog") if fmt == "html" else f.local_path
        stats = cv.read_stats(tool, path)
        assert stats["numGaussians"] == count == f.count, fmt
        _assert_stats_close(src, cv.column_stats(stats), with_rot)


# -- the planar predictor's splat ---------------------------------------------------------------


@pytest.fixture(scope="module")
def planar_made(tmp_path_factory) -> tuple[Path, Gaussians, dict[str, fm.ExtraFile]]:
    _tool()
    tmp = tmp_path_factory.mktemp("planar")
    g = _planar()
    return tmp, g, _made(tmp, g, fm.FORMAT_NAMES, small_ply_keep=5000)


def test_every_planar_format_reads_back_with_its_count_and_statistics(planar_made, tmp_path):
    tmp, g, made = planar_made
    assert set(made) == {"spz", "sog", "compressed_ply", "html", "small_ply", "preview"}
    for f in made.values():
        assert f.local_path.name == f"item.{f.ext}" and f.size == f.local_path.stat().st_size > 0
    _read_back(_tool(), made, tmp / "item.ply", tmp_path, with_rot=True, count=g.count)


def test_the_small_ply_keeps_exactly_the_top_n_and_sharps_metadata(planar_made):
    tmp, g, made = planar_made
    small = made["small_ply"]
    assert small.count == 5000
    kept = read_ply(small.local_path)
    # Reference ranking: highest score first, lower index first among equal scores.
    score = visibility_log_score(g)
    order = np.lexsort((np.arange(g.count), -score))[:5000]
    np.testing.assert_array_equal(kept.vertices, g.vertices[np.sort(order)])
    assert (kept.focal_px, kept.width, kept.height) == (g.focal_px, g.width, g.height)
    assert kept.disparity == pytest.approx(g.disparity) and kept.version == g.version
    np.testing.assert_array_equal(kept.extrinsic, g.extrinsic)
    assert cv.read_info(_tool(), small.local_path)["numGaussians"] == 5000


def test_the_preview_looks_like_the_photo(planar_made):
    """Mean absolute difference (0-255) against the photo scaled to the preview's size.

    The planar splat holds the photo at 256 px (each splat one pixel of it), the preview is 512 px
    from the photo's camera, stored as WebP: upscaling blur, the 5 % of black behind splats of
    opacity 0.95 and lossy coding give 4 to 8 on the six bundled photos. A different photo scores
    33 or more, a black image 80 or more, so 12 separates right from wrong with room on both sides.
    """
    _, _, made = planar_made
    preview = Image.open(made["preview"].local_path)
    assert preview.format == "WEBP" and max(preview.size) == 512
    img = np.asarray(preview.convert("RGB")).astype(np.float64)

    def mad(photo: np.ndarray) -> float:
        ref = np.asarray(Image.fromarray(photo).resize(preview.size, Image.Resampling.BOX)).astype(np.float64)
        return float(np.abs(img - ref).mean())

    assert mad(_photo("boxes")) < PREVIEW_MAD_MAX
    others = [mad(_photo(p.stem)) for p in SAMPLES.glob("*.jpg") if p.stem != "boxes"]
    assert min(others) > 2 * PREVIEW_MAD_MAX
    assert mad(np.zeros_like(_photo("boxes"))) > 2 * PREVIEW_MAD_MAX


def test_the_html_viewer_starts_at_the_photos_viewpoint(planar_made):
    _, g, made = planar_made
    data = made["html"].local_path.read_bytes()
    boot = json.loads(re.search(rb'id="sse-bootstrap">(.*?)</script>', data, re.S).group(1))
    camera = boot["settings"]["cameras"][0]["initial"]
    assert camera["position"] == [0, 0, 0]
    assert camera["target"][2] == pytest.approx(float(np.median(g.vertices[:, 2])), rel=1e-3)
    assert camera["fov"] == pytest.approx(np.degrees(2 * np.arctan(g.height / (2 * g.focal_px))), abs=0.01)


# -- structural checks catch broken files ---------------------------------------------------------


def _broken(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def test_structural_checks_accept_the_real_files(planar_made):
    _, g, made = planar_made
    assert fm.check_spz(made["spz"].local_path) == g.count
    assert fm.check_sog(made["sog"].local_path) == g.count
    assert fm.check_compressed_ply(made["compressed_ply"].local_path) == g.count
    assert fm.check_html(made["html"].local_path) == g.count


@pytest.mark.parametrize("cut", [0, 10, 31, 100, -1])
def test_a_truncated_spz_is_invalid(planar_made, tmp_path, cut):
    data = planar_made[2]["spz"].local_path.read_bytes()
    path = _broken(tmp_path, "x.spz", data[:cut] if cut >= 0 else data[:-1])
    with pytest.raises(PermanentError) as info:
        fm.check_spz(path)
    assert info.value.reason == "invalid_spz"


def test_an_spz_whose_header_lies_about_the_count_is_invalid(planar_made, tmp_path):
    data = bytearray(planar_made[2]["spz"].local_path.read_bytes())
    struct.pack_into("<I", data, 8, struct.unpack_from("<I", data, 8)[0] + 1)
    with pytest.raises(PermanentError, match="stream 0"):
        fm.check_spz(_broken(tmp_path, "x.spz", bytes(data)))


def test_an_spz_v3_gzip_file_is_checked_too(planar_made, tmp_path):
    tmp, g, _ = planar_made
    cv.convert(_tool(), tmp / "item.ply", tmp_path / "v3.spz", options=["--spz-version", "3"])
    assert (tmp_path / "v3.spz").read_bytes()[:2] == b"\x1f\x8b"
    assert fm.check_spz(tmp_path / "v3.spz") == g.count
    raw = gzip.decompress((tmp_path / "v3.spz").read_bytes())
    cut = _broken(tmp_path, "cut.spz", gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(PermanentError, match="need"):
        fm.check_spz(cut)


def _rezip(src: Path, dst: Path, change: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, change.get(name, zin.read(name)))
    return dst


def test_broken_sog_files_are_invalid(planar_made, tmp_path):
    sog = planar_made[2]["sog"].local_path
    data = sog.read_bytes()
    cases = [
        _broken(tmp_path, "cut.sog", data[: len(data) - 50]),
        _broken(tmp_path, "junk.sog", b"not a zip at all"),
        _rezip(sog, tmp_path / "notwebp.sog", {"means_l.webp": b"PNG instead of webp"}),
        _rezip(sog, tmp_path / "nometa.sog", {"meta.json": b"{broken json"}),
    ]
    flipped = bytearray(data)
    flipped[200] ^= 0xFF  # inside the first member's stored bytes: its CRC no longer holds
    cases.append(_broken(tmp_path, "crc.sog", bytes(flipped)))
    for path in cases:
        with pytest.raises(PermanentError) as info:
            fm.check_sog(path)
        assert info.value.reason == "invalid_sog", path.name


def test_broken_compressed_plys_are_invalid(planar_made, tmp_path):
    data = planar_made[2]["compressed_ply"].local_path.read_bytes()
    more = data.replace(b"element vertex 49152", b"element vertex 49153", 1)
    for name, content in [("cut", data[:-16]), ("long", data + b"\0"), ("count", more),
                          ("plain", b"ply\nformat ascii 1.0\nend_header\n")]:
        with pytest.raises(PermanentError) as info:
            fm.check_compressed_ply(_broken(tmp_path, f"{name}.compressed.ply", content))
        assert info.value.reason == "invalid_compressed_ply", name


def test_broken_html_pages_are_invalid(planar_made, tmp_path):
    data = planar_made[2]["html"].local_path.read_bytes()
    start = data.index(b"base64,") + len(b"base64,")
    cases = {
        "cut": data[: len(data) // 2],
        "noboot": data.replace(b'id="sse-bootstrap"', b'id="other"'),
        "badb64": data[:start] + b"!!!!" + data[start + 4:],
        "cutsog": data[:start] + data[start + 400:],
    }
    for name, content in cases.items():
        with pytest.raises(PermanentError) as info:
            fm.check_html(_broken(tmp_path, f"{name}.html", content))
        assert info.value.reason == "invalid_html", name


def test_a_preview_of_the_wrong_size_or_type_is_invalid(tmp_path):
    img = Image.new("RGB", (64, 48), (10, 20, 30))
    img.save(tmp_path / "p.webp", "WEBP")
    fm.check_preview(tmp_path / "p.webp", 64, 48, "webp")
    with pytest.raises(PermanentError, match="64x48"):
        fm.check_preview(tmp_path / "p.webp", 64, 49, "webp")
    img.save(tmp_path / "p.png", "PNG")
    (tmp_path / "q.webp").write_bytes((tmp_path / "p.png").read_bytes())
    with pytest.raises(PermanentError) as info:
        fm.check_preview(tmp_path / "q.webp", 64, 48, "webp")
    assert info.value.reason == "invalid_preview"


# -- failures: reasons and clean-up (stand-in tools, real subprocesses) ---------------------------


def _fake_compressed_ply(count: int) -> bytes:
    """A compressed PLY whose header and size agree (one float per chunk, one uint per Gaussian, all zero)."""
    chunks = -(-count // 256)
    head = (f"ply\nformat binary_little_endian 1.0\nelement chunk {chunks}\nproperty float min_x\n"
            f"element vertex {count}\nproperty uint packed_position\nend_header\n").encode()
    return head + bytes(4 * chunks + 4 * count)


def _stand_in(tmp: Path, body: str) -> str:
    path = tmp / "st-stand-in"
    path.write_text('#!/bin/sh\nfor a in "$@"; do case "$a" in /*) last_path="$a";; esac; done\n' + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _run(tmp: Path, g: Gaussians, formats: tuple[str, ...], tool: str, **kw) -> list[fm.ExtraFile]:
    write_ply(g, tmp / "i.ply")
    opts = fm.FormatOptions(formats=formats, splat_transform_bin=tool, **kw)
    return fm.make_extra_files(g, tmp / "i.ply", "i", tmp / "out", opts)


def test_a_file_that_fails_its_check_is_a_permanent_failure_and_nothing_is_left(tmp_path):
    g = _planar()
    tool = _stand_in(tmp_path, 'printf "garbage" > "$last_path"')
    with pytest.raises(PermanentError) as info:
        _run(tmp_path, g, ("ply", "spz", "compressed.ply", "preview"), tool)
    assert info.value.reason == "invalid_compressed_ply"
    assert list((tmp_path / "out").iterdir()) == []  # the .spz made before it is gone too


def test_files_made_before_a_failing_conversion_are_removed(tmp_path):
    g = _planar()
    (tmp_path / "good.compressed.ply").write_bytes(_fake_compressed_ply(g.count))
    tool = _stand_in(tmp_path, f'case "$last_path" in *.compressed.ply) cp {tmp_path}/good.compressed.ply '
                               '"$last_path";; *) echo "Error: out of cheese" >&2; exit 1;; esac')
    with pytest.raises(PermanentError, match="out of cheese") as info:
        _run(tmp_path, g, ("spz", "sog", "compressed.ply"), tool)
    assert info.value.reason == "splat_transform_failed"
    assert list((tmp_path / "out").iterdir()) == []
    made = _run(tmp_path, g, ("spz", "compressed.ply"), tool)  # the same stand-in makes a passing file alone
    assert [f.kind for f in made] == ["spz", "compressed_ply"] and made[1].count == g.count


def test_a_wrong_count_is_caught(tmp_path):
    g = _planar()
    (tmp_path / "short.ply").write_bytes(_fake_compressed_ply(g.count - 1))
    tool = _stand_in(tmp_path, f'cp {tmp_path}/short.ply "$last_path"')
    with pytest.raises(PermanentError, match="source has 49152") as info:
        _run(tmp_path, g, ("compressed.ply",), tool)
    assert info.value.reason == "invalid_compressed_ply"


def test_a_conversion_timeout_is_transient(tmp_path):
    tool = _stand_in(tmp_path, "sleep 30")
    with pytest.raises(TransientError) as info:
        _run(tmp_path, _planar(), ("html",), tool, timeout_s=0.5)
    assert info.value.reason == "splat_transform_timeout"
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # the viewer settings file is gone too


def test_splat_transform_is_only_needed_for_the_formats_it_makes(tmp_path):
    g = _planar()
    missing = str(tmp_path / "no" / "splat-transform")
    made = _run(tmp_path, g, ("ply", "small.ply", "preview"), missing, small_ply_keep=100, preview_ext="png")
    assert [(f.kind, f.ext) for f in made] == [("small_ply", "small.ply"), ("preview", "preview.png")]
    with pytest.raises(ConfigError, match="not a file"):
        _run(tmp_path, g, ("ply", "sog"), missing)
    assert _run(tmp_path, g, ("ply",), missing) == []
    made = _run(tmp_path, g, ("ply", "spz"), missing)  # written in process: no splat-transform needed
    assert [(f.kind, f.count) for f in made] == [("spz", g.count)]
    assert fm.check_spz(made[0].local_path) == g.count


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("ply,spz", ("ply", "spz")),
    ("spz, sog", ("spz", "sog")),
    ("PREVIEW ply .spz", ("ply", "spz", "preview")),
    ("compressed,small,html", ("compressed.ply", "html", "small.ply")),
    ("spz,spz,ply", ("ply", "spz")),
    (",".join(fm.FORMAT_NAMES), fm.FORMAT_NAMES),
])
def test_parse_formats(text, expected):
    assert fm.parse_formats(text) == expected


@pytest.mark.parametrize("text", ["", " , ", "ply,splat", "ksplat", "glb"])
def test_parse_formats_refuses_unknown_or_empty(text):
    with pytest.raises(ConfigError):
        fm.parse_formats(text)


def test_options_are_validated():
    with pytest.raises(ConfigError):
        fm.FormatOptions(formats=("ply", "splat"))
    with pytest.raises(ConfigError):
        fm.FormatOptions(preview_ext="gif")
    with pytest.raises(ConfigError):
        fm.FormatOptions(spz_version=2)
    assert fm.needs_splat_transform(("ply", "preview")) is False
    assert fm.needs_splat_transform(("ply", "html")) is True


def test_extra_files_json_lists_kind_path_size_hash(tmp_path):
    f = fm.ExtraFile("spz", "spz", tmp_path / "a.spz", 12, "ab" * 32, 3)
    rows = json.loads(fm.extra_files_json([(f, "photos/a/a.spz")]))
    assert rows == [{"kind": "spz", "path": "photos/a/a.spz", "size": 12, "sha256": "ab" * 32}]


# -- a SHARP-size scene -------------------------------------------------------------------------


@pytest.mark.slow
def test_every_format_of_a_sharp_size_scene_reads_back(tmp_path):
    tool = _tool()
    g = sharp_size_scene()
    assert g.count == 1_179_648
    made = _made(tmp_path, g, fm.FORMAT_NAMES, small_ply_keep=20000)
    _read_back(tool, made, tmp_path / "item.ply", tmp_path, with_rot=False, count=g.count)
    assert made["small_ply"].count == 20000
    assert cv.read_info(tool, made["small_ply"].local_path)["numGaussians"] == 20000
    ply_size = (tmp_path / "item.ply").stat().st_size
    for kind in ("spz", "sog", "compressed_ply"):
        assert made[kind].size < ply_size / 2, kind  # each is a real compression of the 66 MB file
    with Image.open(made["preview"].local_path) as im:
        assert im.size == (512, 341)
