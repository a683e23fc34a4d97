"""Make the SPZ golden fixtures in tests/splat/data/ with the pinned splat-transform (an independent encoder:
it embeds Niantic's reference library compiled to WebAssembly).

Run once from the repository root after ``npm ci``: ``python scripts/make_spz_fixtures.py``. It writes the golden
scenes of ``tests/splat/spz_scenes.py`` (SH degree 0, as SHARP writes, and 3) as 3DGS PLY files and converts each
to ``.spz`` versions 4 and 3: ``golden_sh{0,3}_v{4,3}.spz``. ``tests/splat/test_spz.py`` checks that our encoder's
attribute bytes and decoded values match them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests" / "splat")]

from spz_scenes import golden_scene, ply_bytes  # noqa: E402

from sharp_dataset_pipeline.splat.convert import convert, locate_splat_transform, tool_version  # noqa: E402

OUT = REPO / "tests" / "splat" / "data"


def main() -> int:
    tool = locate_splat_transform("", search_roots=[REPO])
    print(f"splat-transform {tool_version(tool)} via {tool.describe()}")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for degree in (0, 3):
            src = Path(tmp) / f"golden_sh{degree}.ply"
            src.write_bytes(ply_bytes(golden_scene(degree)))
            for version in (4, 3):
                dst = OUT / f"golden_sh{degree}_v{version}.spz"
                convert(tool, src, dst, options=["--spz-version", str(version)])
                print(f"wrote {dst.relative_to(REPO)} ({dst.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
