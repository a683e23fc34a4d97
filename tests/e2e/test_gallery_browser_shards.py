"""The gallery of a sharded dataset in a real browser (Debian's headless Chromium, Playwright): the
default shards formats publish no PLY, and the PlayCanvas viewer draws the PLY the gallery converted
from each item's SPZ member. Skipped, with the reason, where ``test_gallery_browser`` is."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from e2e_utils import cli_env, make_photos, run_cli
from PIL import Image
from test_gallery_browser import ARTIFACTS, CHROMIUM, FLAGS, playwright_api

PHOTOS = 2


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from sharp_dataset_pipeline.ops.gallery.viewer_assets import find_engine

    if find_engine() is None:
        pytest.skip("the viewer's engine is not installed "
                    "(npm ci --prefix src/sharp_dataset_pipeline/ops/gallery/viewer)")
    work = tmp_path_factory.mktemp("gallery_browser_shards")
    make_photos(work / "photos", PHOTOS, seed=12, size=(160, 120))
    run = run_cli(work, "run", "--source", "folder:photos", "--predictor", "planar", "--store", "local:store",
                  "--client-id", "browser", "--planar-resolution", "96", LAYOUT="shards")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not list((work / "store").rglob("*.ply"))  # SPZ only: the viewer's PLY is the gallery's own
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharp_dataset_pipeline.ops_cli", "gallery", "--store", "local:store", "--out", "site",
         "--serve", "--port", "0"], cwd=work, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("serving the gallery at "):
                url = line.split(" at ", 1)[1].split()[0]
                break
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_viewer_draws_the_splat_converted_from_spz(served: str, tmp_path: Path) -> None:
    with playwright_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=FLAGS,
                                                        viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(served, wait_until="load")
            assert page.locator(".card").count() == PHOTOS
            page.locator(".card a").first.click()
            page.wait_for_load_state("load")
            page.wait_for_function(
                "() => { const s = document.getElementById('splat-viewer').dataset.state;"
                " return s === 'ready' || s.startsWith('error'); }", timeout=90_000)
            state = page.locator("#splat-viewer").get_attribute("data-state")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "viewer-shards.png"
            page.locator("#splat-viewer").screenshot(path=str(shot))
        finally:
            context.close()
    assert state == "ready", state
    with Image.open(shot) as img:  # the splat is drawn: not one flat clear colour
        pixels = len(np.unique(np.asarray(img.convert("RGB").resize((64, 48))).reshape(-1, 3), axis=0))
    assert pixels > 50, pixels
    assert errors == []
