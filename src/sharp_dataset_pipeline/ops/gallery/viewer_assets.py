"""The 3D viewer's engine: the PlayCanvas npm package, pinned in ``viewer/package.json``. Its splat
loader (``GSplatHandler``) parses PLY, SOG bundles and SOG's JSON, not SPZ: ``build`` converts SPZ to PLY.

It is installed with ``npm ci --prefix src/sharp_dataset_pipeline/ops/gallery/viewer`` and
copied into each site at build time (no CDN: the site works without the internet). A copy of
the same pinned version in the working folder's ``node_modules`` is accepted too.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

VIEWER_DIR = Path(__file__).parent / "viewer"
PACKAGE = "playcanvas"
ENGINE_FILE = "build/playcanvas.min.mjs"
INSTALL_HINT = "npm ci --prefix src/sharp_dataset_pipeline/ops/gallery/viewer"


def pinned_version() -> str:
    """The exact engine version this gallery is written and tested against."""
    data = json.loads((VIEWER_DIR / "package.json").read_text(encoding="utf-8"))
    return str(data["dependencies"][PACKAGE])


def _version(package_dir: Path) -> str:
    try:
        return str(json.loads((package_dir / "package.json").read_text(encoding="utf-8")).get("version", ""))
    except (OSError, ValueError):
        return ""


def find_engine(candidates: list[Path] | None = None) -> Path | None:
    """The installed package folder of the pinned version, or None (with a warning saying how to install)."""
    want = pinned_version()
    search = candidates or [VIEWER_DIR / "node_modules" / PACKAGE, Path.cwd() / "node_modules" / PACKAGE]
    for folder in search:
        if (folder / ENGINE_FILE).is_file():
            found = _version(folder)
            if found == want:
                return folder
            log.warning("%s has %s %s, the gallery needs %s exactly", folder, PACKAGE, found, want)
    log.warning("the 3D viewer's engine (%s %s) is not installed; install it with: %s", PACKAGE, want, INSTALL_HINT)
    return None


def copy_viewer_assets(assets: Path, find: Callable[[], Path | None] | None = None) -> bool:
    """Copy the engine (and its licence) into ``assets``; False when it is not installed."""
    folder = (find or find_engine)()
    if folder is None:
        (assets / "playcanvas.min.mjs").unlink(missing_ok=True)
        return False
    shutil.copyfile(folder / ENGINE_FILE, assets / "playcanvas.min.mjs")
    if (folder / "LICENSE").is_file():
        shutil.copyfile(folder / "LICENSE", assets / "playcanvas.LICENSE.txt")
    return True
