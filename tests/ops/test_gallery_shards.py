"""`gallery` on the sharded layout (issue #14), both stores, through the real CLI on datasets the real
pipeline made with the default shards formats (spz + preview, no PLY): every item gets its page and a
viewer PLY converted from its SPZ member, which our PLY reader decodes to the SPZ's scene; the
conversion keeps at most ``viewer_max_gaussians``, the most visible; a rebuild reuses the media."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from e2e.e2e_utils import make_photos, run_cli
from emulators.hub import HubEmulator, index_rows
from sharp_dataset_pipeline.ops.gallery.build import GalleryOptions, LocalFiles, build_gallery, viewer_splat
from sharp_dataset_pipeline.publish.index import row_from_json
from sharp_dataset_pipeline.publish.parquet_index import row_members
from sharp_dataset_pipeline.publish.shard_read import ItemReader
from sharp_dataset_pipeline.records import IndexRow
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import read_ply
from sharp_dataset_pipeline.splat.spz import decode_spz, encode_gaussians
from sharp_dataset_pipeline.stores.local import LocalStore

PHOTOS = 5
TOKEN = "hf_galleryshardstoken0123456789"
RUN = ("run", "--source", "folder:photos", "--predictor", "planar", "--planar-resolution", "32",
       "--client-id", "alpha", "--batch-size", "4")


@pytest.fixture(scope="module")
def local_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("gallery_shards")
    make_photos(work / "photos", PHOTOS, seed=11)
    done = run_cli(work, *RUN, "--store", "local:store", LAYOUT="shards")
    assert done.returncode == 0, done.stderr[-3000:]
    return work


@pytest.fixture
def work(local_built: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(local_built, dst)
    return dst


def _check_site(site: Path, rows: list[IndexRow], reader: ItemReader) -> None:
    """Every row has its page, photo, preview and a viewer PLY that decodes to its SPZ member's scene."""
    assert {p.stem for p in (site / "items").glob("*.html")} == {r.id for r in rows}
    for row in rows:
        assert not any(m.field == "ply" for m in row_members(row))  # the default formats: no PLY to copy
        media = site / "media" / row.id
        assert (media / "photo.jpg").stat().st_size > 0 and (media / "preview.jpg").stat().st_size > 0
        assert f"media/{row.id}/splat.ply" in (site / "items" / f"{row.id}.html").read_text()
        splat = read_ply(media / "splat.ply")
        scene = decode_spz(reader.spz(row)).scene
        assert splat.count == scene.count == row.num_gaussians > 0
        assert np.array_equal(splat.vertices[:, 0:3], scene.positions)
        assert (splat.width, splat.height) == (row.width, row.height)


def test_local_gallery_gives_every_sharded_item_a_viewer_splat(work: Path) -> None:
    done = run_cli(work, "gallery", "--store", "local:store", "--out", "site", "--runs", "runs")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"gallery: {PHOTOS} items on 1 page" in done.stdout and "skipped" not in done.stdout
    store = LocalStore(work / "store")
    rows = list(store.rows())
    assert len(rows) == PHOTOS and all(r.shard_path for r in rows)
    _check_site(work / "site", rows, ItemReader(LocalFiles(work / "store").local_path))
    again = run_cli(work, "gallery", "--store", "local:store", "--out", "site", "--runs", "runs")
    assert f"(0 rendered, {PHOTOS} reused)" in again.stdout


def test_the_converted_splat_is_capped(work: Path) -> None:
    store = LocalStore(work / "store")
    rows = list(store.rows())
    cap = 100
    result = build_gallery(rows, LocalFiles(store.root), work / "capped", runs=[], events=[],
                           options=GalleryOptions(viewer_max_gaussians=cap), find_viewer=lambda: None)
    assert result.items == PHOTOS and not result.skipped
    for row in rows:
        assert row.num_gaussians > cap and read_ply(work / "capped" / "media" / row.id / "splat.ply").count == cap


def test_the_cap_keeps_the_most_visible_gaussians() -> None:
    rng = np.random.default_rng(3)
    n, cap = 2000, 300
    xyz = rng.normal(size=(n, 3)) + [0, 0, 4]
    scene = Gaussians.from_attributes(xyz, rng.normal(size=(n, 3)), rng.normal(0, 3, size=n),
                                      rng.uniform(-7, -2, size=(n, 3)), np.tile([1.0, 0, 0, 0], (n, 1)),
                                      focal_px=400.0, width=64, height=48)
    spz = encode_gaussians(scene)
    stored = decode_spz(spz).scene  # what the viewer's scene is made from: the SPZ's quantised values
    alpha = 1 / (1 + np.exp(-stored.alphas.astype(np.float64)))
    score = np.log(alpha) + stored.scales.astype(np.float64).sum(axis=1)
    kept = viewer_splat(spz, IndexRow(id="x", source="s", unit="u", width=64, height=48, focal_px=400.0), cap)
    assert kept.count == cap and (kept.width, kept.height, kept.focal_px) == (64, 48, 400.0)
    threshold = np.sort(score)[-cap]
    want = {tuple(p) for p in stored.positions[score > threshold]}
    got = {tuple(p) for p in kept.vertices[:, 0:3]}
    assert len(want) > cap // 2 and want <= got


def _hub_cli(cwd: Path, hub: HubEmulator, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cwd, *args, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HUB_DISABLE_PROGRESS_BARS="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", **env)


def test_hub_gallery_gives_every_sharded_item_a_viewer_splat(tmp_path: Path) -> None:
    make_photos(tmp_path / "photos", PHOTOS, seed=11)
    with HubEmulator() as hub:
        done = _hub_cli(tmp_path, hub, *RUN, "--store", "hf:gallery/shards", LAYOUT="shards")
        assert done.returncode == 0, done.stderr[-3000:]
        site = _hub_cli(tmp_path, hub, "gallery", "--store", "hf:gallery/shards", "--out", "site", "--runs", "runs")
        assert site.returncode == 0, site.stderr[-3000:]
        files = hub.files("gallery/shards")
    assert f"gallery: {PHOTOS} items on 1 page" in site.stdout and "skipped" not in site.stdout
    rows = [row_from_json(json.dumps(r)) for r in index_rows(files)]
    assert len(rows) == PHOTOS and all(r.shard_path for r in rows)
    tars = tmp_path / "tars"
    for path, data in files.items():
        if path.endswith(".tar"):
            (tars / path).parent.mkdir(parents=True, exist_ok=True)
            (tars / path).write_bytes(data)
    _check_site(tmp_path / "site", rows, ItemReader(LocalFiles(tars).local_path))
