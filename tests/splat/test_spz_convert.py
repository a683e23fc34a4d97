"""``sharp-dataset convert`` through the real CLI (subprocesses): SHARP and other 3DGS PLY files to ``.spz`` (and
every other format), one output per input, a clear error for a PLY that is not a Gaussian splat, usage errors."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from spz_scenes import assert_within_quantisation, ply_bytes, random_scene

from sharp_dataset_pipeline import convert_cli
from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.splat import formats as fm
from sharp_dataset_pipeline.splat.convert import locate_splat_transform
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import InvalidSplat, read_ply, write_ply
from sharp_dataset_pipeline.splat.ply_any import REQUIRED as _REQ
from sharp_dataset_pipeline.splat.ply_any import read_splat_ply
from sharp_dataset_pipeline.splat.spz import arrays_from_gaussians, decode_spz

REPO = Path(__file__).resolve().parents[2]


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([sys.executable, "-m", "sharp_dataset_pipeline.cli", "convert", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=300)


def _sharp(tmp: Path, name: str = "sharp.ply", n: int = 4000) -> tuple[Path, Gaussians]:
    s = random_scene(n, 7, far=50.0)
    v = np.column_stack([s.positions, np.clip(s.colors, -3, 3), s.alphas, s.scales, s.rotations]).astype(np.float32)
    g = Gaussians(vertices=v, focal_px=900.0, width=640, height=480)
    write_ply(g, tmp / name)
    return tmp / name, g


def _point_cloud(tmp: Path) -> Path:
    head = b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\n" \
           b"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    (tmp / "cloud.ply").write_bytes(head + bytes(2 * 15))
    return tmp / "cloud.ply"


def test_many_files_of_both_layouts_convert_to_spz_in_one_process(tmp_path):
    sharp, g = _sharp(tmp_path)
    classic = random_scene(3000, 8, sh_degree=3)
    (tmp_path / "classic.ply").write_bytes(ply_bytes(classic))
    vertex_only = random_scene(1000, 9)
    (tmp_path / "other.ply").write_bytes(ply_bytes(vertex_only, normals=False,
                                                   extra={"confidence": np.ones(1000, np.float32)}))
    res = _cli(tmp_path, "sharp.ply", "classic.ply", "other.ply", "--to", "spz", "--output-dir", "out")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(" -> ") == 3 and "out/classic.spz" in res.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["classic.spz", "other.spz", "sharp.spz"]
    got = decode_spz((tmp_path / "out" / "classic.spz").read_bytes())
    assert got.version == 4 and got.scene.sh_degree == 3  # every SH band of the input kept
    assert_within_quantisation(classic, got.scene, 12)
    assert_within_quantisation(vertex_only, decode_spz((tmp_path / "out" / "other.spz").read_bytes()).scene, 12)
    sharp_back = decode_spz((tmp_path / "out" / "sharp.spz").read_bytes()).scene
    assert_within_quantisation(arrays_from_gaussians(g), sharp_back, 12)


def test_one_file_to_one_output_with_spz_version_3_and_no_node(tmp_path):
    sharp, g = _sharp(tmp_path, n=500)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    res = _cli(tmp_path, "sharp.ply", "--to", "spz", "--output", "x/scene.spz", "--spz-version", "3",
               PATH=str(empty), SPLAT_TRANSFORM_BIN=str(tmp_path / "none"))
    assert res.returncode == 0, res.stderr
    data = (tmp_path / "x" / "scene.spz").read_bytes()
    assert data[:2] == b"\x1f\x8b" and gzip.decompress(data)[:8] == b"NGSP\x03\x00\x00\x00"
    assert_within_quantisation(arrays_from_gaussians(g), decode_spz(data).scene, 12)
    res = _cli(tmp_path, "sharp.ply", "--to", "sog", "--output", "x/scene.sog", PATH=str(empty),
               SPLAT_TRANSFORM_BIN=str(tmp_path / "none"))
    assert res.returncode == 2 and "SPLAT_TRANSFORM_BIN points to" in res.stderr
    assert not (tmp_path / "x" / "scene.sog").exists()


def test_a_ply_that_is_not_a_splat_fails_alone_with_a_clear_error(tmp_path):
    _sharp(tmp_path)
    _point_cloud(tmp_path)
    (tmp_path / "notes.ply").write_text("hello\n")
    res = _cli(tmp_path, "cloud.ply", "sharp.ply", "notes.ply", "--to", "spz", "--output-dir", "out")
    assert res.returncode == 1
    assert ("cloud.ply: not a Gaussian splat: the vertex element has x, y, z, red, green, blue but no f_dc_0"
            in res.stderr) and "(a point cloud or mesh?)" in res.stderr
    assert "notes.ply: not a PLY file" in res.stderr and "2 of 3 inputs failed" in res.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["sharp.spz"]


def test_every_publish_format_can_be_made(tmp_path):
    try:
        locate_splat_transform("", search_roots=[REPO])
    except ConfigError as exc:
        pytest.skip(f"splat-transform is not installed (run `npm ci` in the repository root): {exc}")
    _sharp(tmp_path, n=3000)
    res = _cli(REPO, str(tmp_path / "sharp.ply"), "--to", ",".join(fm.FORMAT_NAMES), "--output-dir",
               str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["sharp.ply", "sharp.spz", "sharp.sog", "sharp.compressed.ply", "sharp.html",
                            "sharp.small.ply", "sharp.preview.webp"])
    assert read_ply(out / "sharp.ply").count == 3000
    assert fm.check_spz(out / "sharp.spz") == fm.check_sog(out / "sharp.sog") == 3000
    assert fm.check_compressed_ply(out / "sharp.compressed.ply") == fm.check_html(out / "sharp.html") == 3000
    assert read_ply(out / "sharp.small.ply").count == 3000  # fewer than the 20,000 kept
    fm.check_preview(out / "sharp.preview.webp", 512, 384, "webp")


def test_usage_errors_exit_2_and_existing_outputs_are_kept(tmp_path):
    _sharp(tmp_path, "a.ply", 300)
    _sharp(tmp_path, "b.ply", 300)
    res = _cli(tmp_path, "a.ply", "b.ply", "--to", "spz", "--output", "one.spz")
    assert res.returncode == 2 and "--output FILE takes one input" in res.stderr
    res = _cli(tmp_path, "a.ply", "--to", "gif", "--output-dir", "out")
    assert res.returncode == 2 and "unknown format 'gif' in --to" in res.stderr
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.spz").write_bytes(b"keep me")
    res = _cli(tmp_path, "a.ply", "--to", "spz", "--output-dir", "out")
    assert res.returncode == 1 and "exists (use --overwrite)" in res.stderr
    assert (tmp_path / "out" / "a.spz").read_bytes() == b"keep me"
    assert _cli(tmp_path, "a.ply", "--to", "spz", "--output-dir", "out", "--overwrite").returncode == 0
    assert decode_spz((tmp_path / "out" / "a.spz").read_bytes()).scene.count == 300


def test_many_files_show_a_progress_bar(tmp_path):
    paths = [_sharp(tmp_path, f"s{i}.ply", 200)[0] for i in range(3)]
    opts = fm.FormatOptions(formats=("spz",))
    plans = convert_cli.plan_targets(paths, ("spz",), opts, None, tmp_path / "out")
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    assert convert_cli.run_conversions(paths, plans, opts, False, console) == 0
    assert "converting" in buf.getvalue() and "3/3" in buf.getvalue()
    assert [read_splat_ply(p).sharp_layout for p in paths] == [True] * 3


@pytest.mark.parametrize("header, body, message", [
    (b"format ascii 1.0\nelement vertex 1\nproperty float x\n", b"0\n", "only binary little-endian"),
    (b"format binary_little_endian 1.0\nelement chunk 1\nproperty float min_x\nelement vertex 1\n"
     b"property uint packed_position\nproperty uint packed_rotation\n", bytes(8), "PlayCanvas compressed PLY"),
    (b"format binary_little_endian 1.0\nelement vertex 1\n" + b"".join(
        f"property float {n}\n".encode() for n in (*_REQ, "f_rest_0")), bytes(4 * 15), r"1 f_rest_\* properties"),
    (b"format binary_little_endian 1.0\nelement vertex 2\n" + b"".join(
        f"property float {n}\n".encode() for n in _REQ), bytes(4 * 14), "truncated: the vertices end at byte"),
], ids=["ascii", "compressed-ply", "odd-sh-count", "truncated"])
def test_read_splat_ply_says_why_a_file_is_refused(tmp_path, header, body, message):
    path = tmp_path / "x.ply"
    path.write_bytes(b"ply\n" + header + b"end_header\n" + body)
    with pytest.raises(InvalidSplat, match=message):
        read_splat_ply(path)
