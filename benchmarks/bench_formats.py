"""Publishable formats of one SHARP-size item (1,179,648 Gaussians): seconds and bytes per format.

For each format: wall-clock seconds to make and check it (``formats.make_extra_files``, one format at a
time, splat-transform start-up included) and its size as a fraction of the SHARP ``.ply``. Then the
preview against splat-transform's ``.spz`` conversion of the same item (target: preview <= 1/4 of it; the
pipeline's own ``.spz`` is now written in process, see ``bench_spz.py``).

Two synthetic scenes bracket real output: ``smooth`` (one colour gradient, identity rotations, the
same scale everywhere: compresses very well) and ``noisy`` (random rotations, per-splat noise on
colour, scale and opacity: compresses badly). Run from the repository root after ``npm ci``:
``python benchmarks/bench_formats.py [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import machine_line, parse_args, repeats, time_call
from sharp_dataset_pipeline.splat.convert import convert, locate_splat_transform, tool_version
from sharp_dataset_pipeline.splat.formats import FormatOptions, make_extra_files, render_item_preview
from sharp_dataset_pipeline.splat.gaussians import Gaussians, f_dc_from_srgb, logit
from sharp_dataset_pipeline.splat.ply import validate_ply, write_ply
from sharp_dataset_pipeline.splat.preview import save_preview

SIDE, WIDTH, HEIGHT, FOCAL = 768, 1536, 1024, 1400.0
FORMATS = ("spz", "sog", "compressed.ply", "html", "small.ply", "preview")


def scene(noisy: bool, seed: int = 0) -> Gaussians:
    """Two 768 x 768 layers unprojected through a 1536 x 1024 photo's camera (SHARP's layout)."""
    rng = np.random.default_rng(seed)
    gy, gx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    u, v = ((gx + 0.5) * WIDTH / SIDE).reshape(-1), ((gy + 0.5) * HEIGHT / SIDE).reshape(-1)
    depth = (2.0 + 3.0 * gy / SIDE + 0.3 * np.sin(gx / 40.0)).reshape(-1)
    colour = np.stack([gx / SIDE, gy / SIDE, 0.5 + 0.5 * np.sin(gx / 25.0)], -1).reshape(-1, 3)
    noise = 1.0 if noisy else 0.0
    blocks = []
    for dz, alpha in ((0.0, 0.9), (0.6, 0.5)):
        z = depth + dz
        n = z.size
        xyz = np.stack([(u - WIDTH / 2) * z / FOCAL, (v - HEIGHT / 2) * z / FOCAL, z], -1)
        quat = np.tile(np.float32([1, 0, 0, 0]), (n, 1))
        if noisy:
            quat = rng.standard_normal((n, 4))
            quat /= np.linalg.norm(quat, axis=1, keepdims=True)
        log_s = np.log(z * (WIDTH / SIDE) / FOCAL * 0.6)[:, None] + noise * rng.normal(0, 0.2, (n, 3))
        col = np.clip(colour + noise * rng.normal(0, 0.03, (n, 3)), 0, 1)
        op = logit(np.clip(alpha + noise * rng.normal(0, 0.1, n), 0.01, 0.99))
        blocks.append(np.concatenate([xyz, f_dc_from_srgb(col), op[:, None], np.broadcast_to(log_s, (n, 3)),
                                      quat], 1).astype(np.float32))
    return Gaussians(vertices=np.concatenate(blocks), focal_px=FOCAL, width=WIDTH, height=HEIGHT)


def bench_scene(name: str, g: Gaussians, work: Path, n: int) -> dict[str, tuple[float, int]]:
    """format -> (median seconds, bytes); 'ply' is the SHARP file itself (write + validate)."""
    ply = work / "item.ply"
    out: dict[str, tuple[float, int]] = {}
    t = time_call(f"{name}: ply write + validate", lambda: (write_ply(g, ply), validate_ply(ply)), n, warmup=0)
    out["ply"] = (t.median, ply.stat().st_size)
    for fmt in FORMATS:
        opts = FormatOptions(formats=(fmt,))
        made: list = []
        t = time_call(f"{name}: {fmt}", lambda o=opts, m=made: m.append(make_extra_files(g, ply, "item", work, o)),
                      n, warmup=0)
        out[fmt] = (t.median, made[-1][0].size)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    n = repeats(args, full=2, quick=1)
    tool = locate_splat_transform()
    print(machine_line())
    print(f"splat-transform {tool_version(tool)} via {tool.describe()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("smooth", "noisy"):
            g = scene(noisy=name == "noisy")
            results[name] = bench_scene(name, g, Path(tmp), n)
        g = scene(noisy=True)
        # The preview alone (render + WebP), without file checks, against splat-transform's spz conversion.
        write_ply(g, Path(tmp) / "noisy.ply")
        st_spz = time_call("splat-transform .ply -> .spz (noisy)", lambda: convert(
            tool, Path(tmp) / "noisy.ply", Path(tmp) / "st.spz"), n, warmup=0)
        render = time_call("preview render + save (noisy)", lambda: save_preview(
            render_item_preview(g, 512), Path(tmp) / "p.webp"), max(n, 3))
    print()
    print("| format | smooth: s/item | smooth: size (x .ply) | noisy: s/item | noisy: size (x .ply) |")
    print("| --- | --- | --- | --- | --- |")
    for fmt in ("ply", *FORMATS):
        cells = []
        for name in ("smooth", "noisy"):
            secs, size = results[name][fmt]
            frac = size / results[name]["ply"][1]
            shown = f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
            cells += [f"{secs:.2f}", f"{shown} ({frac:.3f})"]
        print(f"| {fmt} | " + " | ".join(cells) + " |")
    spz = st_spz.median
    print(f"\npreview {render.median:.3f} s vs splat-transform spz {spz:.2f} s: {render.median / spz:.3f} of it "
          f"(target <= 0.25): {'OK' if render.median <= 0.25 * spz else 'MISSED'}")
    print(f"finished at {time.strftime('%H:%M:%S')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
