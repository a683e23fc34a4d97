"""The gallery site built from a real store: pages, media, report plots, incremental rebuilds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e2e.e2e_utils import read_rows
from sharp_dataset_pipeline.ops.gallery import pages
from sharp_dataset_pipeline.ops.gallery.build import GalleryOptions, LocalFiles, build_gallery
from sharp_dataset_pipeline.ops.gallery.runs import read_runs
from sharp_dataset_pipeline.ops.gallery.viewer_assets import find_engine, pinned_version
from sharp_dataset_pipeline.ops.status import publish_events
from sharp_dataset_pipeline.records import IndexRow
from sharp_dataset_pipeline.stores.local import LocalStore
from sharp_dataset_pipeline.stores.local_remove import remove_local

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

GPU_CSV = ("timestamp,gpu_index,gpu_name,mem_used_mib,mem_total_mib,util_gpu_pct,event\n"
           "2026-01-01T00:00:00+00:00,0,H100,1000,80000,5,start\n"
           "2026-01-01T00:01:00+00:00,0,H100,31000,80000,99,interval\n")


def _build(ws: Path, out: Path, **kw: object):
    store = LocalStore(ws / "store")
    store.open()
    try:
        return build_gallery(store.rows(), LocalFiles(store.root), out, runs=read_runs(ws / "runs"),
                             events=publish_events(store.admin()), **kw)
    finally:
        store.close()


def test_site_has_every_item_with_photo_and_rendered_preview(workspace: Path, tmp_path: Path) -> None:
    (workspace / "runs" / "R1" / "gpu_mem_log.csv").write_text(GPU_CSV)
    out = tmp_path / "site"
    result = _build(workspace, out, options=GalleryOptions(per_page=4), find_viewer=lambda: None)
    assert (result.items, result.pages, result.rendered, result.skipped) == (6, 2, 6, [])
    ids = {r["id"] for r in read_rows(workspace / "store")}
    html = (out / "index.html").read_text() + (out / "index-2.html").read_text()
    assert set(re.findall(r'data-item="([^"]+)"', html)) == ids
    for item_id in ids:
        preview = np.asarray(Image.open(out / "media" / item_id / "preview.jpg"))
        assert 0 < max(preview.shape[:2]) <= 480 and preview.mean() > 20  # a real render, not a black frame
        assert Image.open(out / "media" / item_id / "photo.jpg").size == (96, 64)  # never enlarged
        assert (out / "media" / item_id / "splat.ply").read_bytes()[:4] == b"ply\n"
        page = (out / "items" / f"{item_id}.html").read_text()
        assert "Photo from folder file" in page and "not SHARP" in page and "No 3D viewer" in page
    report = (out / "report.html").read_text()
    plots = dict(re.findall(r'data-plot="([^"]+)" data-kind="([^"]+)"', report))
    assert plots == {"items-per-minute": "line", "stage-timings": "bar", "published-per-run": "line",
                     "gpu-memory": "line"}
    assert 'data-series="alpha"' in report and 'data-series="R1 GPU0 used"' in report
    assert "6 items published in 2 publish steps by 1 client" in report


def test_rebuild_reuses_media_and_drops_removed_items(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    _build(workspace, out, find_viewer=lambda: None)
    victim = read_rows(workspace / "store")[0]["id"]
    remove_local(workspace / "store", "data/train.jsonl", [victim], "test", now=2e9)
    again = _build(workspace, out, find_viewer=lambda: None)
    assert (again.items, again.rendered, again.reused) == (5, 0, 5)
    assert not (out / "media" / victim).exists() and not (out / "items" / f"{victim}.html").exists()
    assert victim not in (out / "index.html").read_text()


def test_viewer_assets_are_bundled_from_the_pinned_package(workspace: Path, tmp_path: Path) -> None:
    engine = find_engine()
    if engine is None:
        import pytest

        pytest.skip("viewer engine not installed (npm ci --prefix src/sharp_dataset_pipeline/ops/gallery/viewer)")
    out = tmp_path / "site"
    result = _build(workspace, out)
    assert result.viewer
    assert (out / "assets" / "playcanvas.min.mjs").stat().st_size > 500_000
    assert pinned_version() == "2.23.3"
    item = read_rows(workspace / "store")[1]["id"]
    page = (out / "items" / f"{item}.html").read_text()
    assert f'data-src="../media/{item}/splat.ply"' in page and "assets/viewer.js" in page
    assert "http://" not in (out / "assets" / "viewer.js").read_text()  # nothing fetched from the internet


def test_item_page_escapes_row_text_and_links_only_http() -> None:
    row = IndexRow(id="abc", source="unsplash", unit="u", user_name="<b>Ann</b>", user_url="javascript:alert(1)",
                   page_url="https://unsplash.com/photos/abc", license="Unsplash License", description='"quoted" & <i>',
                   predictor="sharp")
    html = pages.item_page(pages.GalleryItem(row, "media/abc/photo.jpg", "media/abc/preview.jpg", "media/abc/s.ply"),
                           title="T", viewer=True)
    assert "<b>Ann</b>" not in html and "&lt;b&gt;Ann&lt;/b&gt;" in html
    assert "javascript:" not in html
    assert '<a href="https://unsplash.com/photos/abc" rel="noopener">Unsplash</a>' in html
    assert "&quot;quoted&quot; &amp; &lt;i&gt;" in html and "not SHARP" not in html
    assert pages.safe_url("ftp://x") == "" and pages.safe_url("https://a.b/c") == "https://a.b/c"
