"""The ``spz`` publish format is made in process: no splat-transform, ``SPZ_VERSION`` honoured, a scene SPZ cannot
hold fails the item with a clear reason and leaves nothing behind."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from sharp_dataset_pipeline.errors import PermanentError
from sharp_dataset_pipeline.splat import formats as fm
from sharp_dataset_pipeline.splat import spz
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import write_ply


def _scene(n: int = 3000, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 14)).astype(np.float32)
    v[:, 2] = rng.uniform(0.5, 50, n)
    return Gaussians(vertices=v, focal_px=800.0, width=640, height=480)


def _make(tmp, g: Gaussians, **kw) -> list[fm.ExtraFile]:
    write_ply(g, tmp / "i.ply")
    opts = fm.FormatOptions(formats=("ply", "spz"), splat_transform_bin=str(tmp / "missing" / "splat-transform"), **kw)
    return fm.make_extra_files(g, tmp / "i.ply", "i", tmp / "out", opts)


@pytest.mark.parametrize("version, magic", [(4, b"NGSP"), (3, b"\x1f\x8b")])
def test_spz_is_written_in_process_in_the_chosen_version(tmp_path, version, magic):
    g = _scene()
    (made,) = _make(tmp_path, g, spz_version=version, deep_check=True)
    assert (made.kind, made.ext, made.count) == ("spz", "spz", g.count)
    data = made.local_path.read_bytes()
    assert data[:len(magic)] == magic and made.size == len(data)
    back = spz.decode_spz(data)
    assert back.version == version
    assert np.abs(back.scene.positions - g.vertices[:, :3]).max() <= 0.5 / 4096 + 1e-5
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["i.spz"]  # no temporary left


def test_a_scene_spz_cannot_hold_fails_the_item_and_leaves_nothing(tmp_path):
    g = _scene()
    g.vertices[10, 0] = 1e8  # beyond SPZ's 24-bit fixed point at any number of fractional bits
    with pytest.raises(PermanentError, match="cannot be stored as SPZ.*24-bit") as info:
        _make(tmp_path, g)
    assert info.value.reason == "spz_unencodable"
    assert list((tmp_path / "out").iterdir()) == []


def test_the_v3_file_is_one_gzip_stream_of_the_legacy_layout(tmp_path):
    g = _scene(500)
    (made,) = _make(tmp_path, g, spz_version=3)
    raw = gzip.decompress(made.local_path.read_bytes())
    assert raw[:8] == b"NGSP\x03\x00\x00\x00" and len(raw) == 16 + 500 * 20
    assert fm.check_spz(made.local_path) == 500


def test_the_spz_version_setting_reaches_the_format_options(monkeypatch):
    from sharp_dataset_pipeline.app import format_options
    from sharp_dataset_pipeline.errors import ConfigError
    from sharp_dataset_pipeline.settings import load_settings

    assert format_options(load_settings(env_file=None)).spz_version == 4
    monkeypatch.setenv("SPZ_VERSION", "3")
    assert format_options(load_settings(env_file=None)).spz_version == 3
    monkeypatch.setenv("SPZ_VERSION", "2")
    with pytest.raises(ConfigError, match="SPZ_VERSION"):
        load_settings(env_file=None)
