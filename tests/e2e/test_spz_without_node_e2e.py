"""``PUBLISH_FORMATS`` with ``spz`` works where Node and splat-transform are absent: the real CLI, a PATH with no
``node`` on it and ``SPLAT_TRANSFORM_BIN`` pointing at a missing file; the published ``.spz`` decodes to the
published ``.ply``'s Gaussians."""

from __future__ import annotations

import json

import numpy as np
import pytest
from e2e_utils import check_consistent, make_photos, run_cli

from sharp_dataset_pipeline.splat.ply import read_ply
from sharp_dataset_pipeline.splat.spz import decode_spz

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")


def test_spz_is_published_without_node(tmp_path):
    photos, store, empty = tmp_path / "photos", tmp_path / "store", tmp_path / "empty-path"
    make_photos(photos, 2)
    empty.mkdir()
    res = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar", "--store",
                  f"local:{store}", PUBLISH_FORMATS="ply,spz,preview", SPZ_VERSION="3", PATH=str(empty),
                  SPLAT_TRANSFORM_BIN=str(tmp_path / "no-such" / "splat-transform"))
    assert res.returncode == 0, res.stderr[-2000:]
    rows = check_consistent(store)
    assert len(rows) == 2
    for row in rows:
        extra = {e["kind"]: e["path"] for e in json.loads(row["extra_files"])}
        assert set(extra) == {"spz", "preview"}
        data = (store / extra["spz"]).read_bytes()
        assert data[:2] == b"\x1f\x8b"  # SPZ_VERSION=3: one gzip stream
        got = decode_spz(data)
        g = read_ply(store / row["ply_path"])
        assert got.version == 3 and got.scene.count == g.count
        assert np.abs(got.scene.positions - g.vertices[:, :3]).max() <= 0.5 / 4096 + 1e-5
