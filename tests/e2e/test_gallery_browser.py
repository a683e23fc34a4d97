"""The gallery in a real browser: Debian's headless Chromium driven by Playwright.

A real pipeline run makes the store, ``gallery --serve --port 0`` builds the site and serves it
on loopback, and the browser checks what a person would see. Screenshots go to
``artifacts/gallery/`` (git-ignored) as test artifacts.

Needs ``apt-get install -y chromium`` and the ``playwright`` Python package (its own browser
download is never used), plus the viewer's engine
(``npm ci --prefix src/sharp_dataset_pipeline/ops/gallery/viewer``); skipped with the reason otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from e2e_utils import cli_env, make_photos, run_cli
from PIL import Image

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "gallery"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHOTOS = 5

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def served_gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from sharp_dataset_pipeline.ops.gallery.viewer_assets import find_engine

    if find_engine() is None:
        pytest.skip("the viewer's engine is not installed "
                    "(npm ci --prefix src/sharp_dataset_pipeline/ops/gallery/viewer)")
    work = tmp_path_factory.mktemp("gallery_browser")
    make_photos(work / "photos", PHOTOS, seed=11, size=(160, 120))
    run = run_cli(work, "run", "--source", "folder:photos", "--predictor", "planar", "--store", "local:store",
                  "--run-id", "G1", "--client-id", "browser", "--planar-resolution", "96", LAYOUT="files")
    assert run.returncode == 0, run.stderr[-2000:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharp_dataset_pipeline.ops_cli", "gallery", "--store", "local:store", "--out", "site",
         "--serve", "--port", "0"], cwd=work, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        assert proc.stdout is not None
        for line in proc.stdout:  # the build summary, then the URL line
            if line.startswith("serving the gallery at "):
                url = line.split(" at ", 1)[1].split()[0]
                break
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        yield url, work
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def playwright(served_gallery: tuple[str, Path]) -> Iterator[object]:
    with playwright_api.sync_playwright() as pw:  # one per module: the sync API does not nest
        yield pw


@pytest.fixture(scope="module")
def browser_page(playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    profile = tmp_path_factory.mktemp("chromium_profile")
    context = playwright.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                            args=FLAGS, viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def _watch(page: object) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    return errors


def test_index_shows_every_thumbnail(served_gallery: tuple[str, Path], browser_page) -> None:
    url, _ = served_gallery
    page = browser_page
    errors = _watch(page)
    page.goto(url, wait_until="load")
    images = page.locator("img.photo, img.preview")
    for i in range(images.count()):  # thumbnails load lazily, as a person scrolls to them
        images.nth(i).scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
    loaded = page.eval_on_selector_all("img.photo, img.preview", "els => els.map(e => e.complete && e.naturalWidth)")
    assert len(loaded) == 2 * PHOTOS and all(w and w > 0 for w in loaded), loaded
    assert page.locator(".card").count() == PHOTOS
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)
    assert errors == []


def test_item_page_shows_attribution_and_the_viewer_starts(served_gallery: tuple[str, Path], browser_page) -> None:
    url, _ = served_gallery
    page = browser_page
    errors = _watch(page)
    page.goto(url, wait_until="load")
    page.locator(".card a").first.click()
    page.wait_for_load_state("load")
    attribution = page.locator("p.attribution").inner_text()
    assert attribution.startswith("Photo from folder file photo_11_")
    page.wait_for_function(
        "() => { const s = document.getElementById('splat-viewer').dataset.state;"
        " return s === 'ready' || s.startsWith('error'); }", timeout=90_000)
    state = page.locator("#splat-viewer").get_attribute("data-state")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "item.png"), full_page=True)
    page.locator("#splat-viewer").screenshot(path=str(ARTIFACTS / "viewer.png"))
    assert state == "ready", state
    # The splat is drawn: the viewer's pixels are not one flat clear colour.
    with Image.open(ARTIFACTS / "viewer.png") as shot:
        pixels = len(np.unique(np.asarray(shot.convert("RGB").resize((64, 48))).reshape(-1, 3), axis=0))
    assert pixels > 50, pixels
    assert errors == []


def test_report_page_shows_its_plots(served_gallery: tuple[str, Path], browser_page) -> None:
    url, _ = served_gallery
    page = browser_page
    errors = _watch(page)
    page.goto(url + "report.html", wait_until="load")
    names = page.eval_on_selector_all("svg.plot", "els => els.map(e => e.dataset.plot)")
    assert names == ["items-per-minute", "stage-timings", "published-per-run", "gpu-memory"]
    assert page.locator('svg[data-plot="items-per-minute"] polyline[data-series="browser"]').count() == 1
    assert page.locator('svg[data-plot="stage-timings"] rect.bar').count() == 4
    box = page.locator('svg[data-plot="items-per-minute"]').bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert errors == []


def test_without_webgl_the_item_page_shows_the_preview_in_the_viewer_place(
        served_gallery: tuple[str, Path], playwright, tmp_path: Path) -> None:
    url, _ = served_gallery
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
        args=[*FLAGS, "--disable-3d-apis", "--disable-webgl"], viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(url, wait_until="load")
        assert page.evaluate("() => !document.createElement('canvas').getContext('webgl')")  # truly no WebGL
        page.locator(".card a").first.click()
        page.wait_for_load_state("load")
        page.wait_for_function("() => document.getElementById('splat-viewer').dataset.state.startsWith('error')",
                               timeout=60_000)
        still = page.locator("#viewer-fallback")
        page.wait_for_function("() => { const i = document.getElementById('viewer-fallback');"
                               " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
        assert not page.locator("#splat-viewer").is_visible()  # no blank canvas left in the way
        status = page.locator("#viewer-status")
        assert "could not start" in status.inner_text() and "preview" in status.inner_text()
        heading = page.locator("h2", has_text="3D view").bounding_box()
        message, image = status.bounding_box(), still.bounding_box()
        assert heading and message and image
        # The message sits right under the heading, the preview right under the message.
        assert 0 <= message["y"] - heading["y"] < 120 and 0 <= image["y"] - message["y"] < 120
        assert image["height"] > 100
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "item-no-webgl.png"), full_page=True)
    finally:
        context.close()
