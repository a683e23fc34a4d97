"""Rendering a 512 px CPU preview of one SHARP-size scene (1,179,648 Gaussians).

The scene imitates SHARP's output: two layers of 768 × 768 Gaussians in front of the camera of a
1536 × 1024 photo, unprojected through that camera, with a synthetic colour image and depth map.
"""

from __future__ import annotations

import sys

import numpy as np

from harness import machine_line, parse_args, repeats, time_call
from sharp_dataset_pipeline.splat.gaussians import Gaussians, f_dc_from_srgb, logit
from sharp_dataset_pipeline.splat.preview import render_preview

GRID = 768
WIDTH, HEIGHT, FOCAL = 1536, 1024, 1400.0


def sharp_like_scene(seed: int = 0) -> Gaussians:
    """Two depth layers on a 768² grid of the photo, like SHARP's initializer lays them out."""
    rng = np.random.default_rng(seed)
    gy, gx = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    u = (gx + 0.5) * WIDTH / GRID
    v = (gy + 0.5) * HEIGHT / GRID
    depth = 2.0 + 3.0 * (gy / GRID) + 0.3 * np.sin(gx / 40.0)
    colour = np.stack([gx / GRID, gy / GRID, 0.5 + 0.5 * np.sin(gx / 25.0)], axis=-1)
    layers = []
    for layer, (dz, alpha) in enumerate(((0.0, 0.9), (0.5, 0.6))):
        z = depth + dz
        xyz = np.stack([(u - WIDTH / 2) * z / FOCAL, (v - HEIGHT / 2) * z / FOCAL, z], axis=-1).reshape(-1, 3)
        n = xyz.shape[0]
        jitter = rng.normal(0, 0.02, (n, 3)).astype(np.float32)
        layers.append(np.concatenate([
            xyz,
            f_dc_from_srgb(np.clip(colour.reshape(-1, 3) + jitter, 0, 1)),
            logit(np.full((n, 1), alpha - 0.1 * layer)),
            np.log(np.repeat((z.reshape(-1, 1) * WIDTH / GRID / FOCAL) * 0.5, 3, axis=1)),
            np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
        ], axis=1).astype(np.float32))
    return Gaussians(vertices=np.concatenate(layers), focal_px=FOCAL, width=WIDTH, height=HEIGHT)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    g = sharp_like_scene()
    print(machine_line())
    print(f"{g.count:,} Gaussians, preview 512 px, {'quick' if args.quick else 'full'} run")
    n = repeats(args, full=5, quick=1)
    img = render_preview(g, 512)
    print(f"image {img.shape[1]}x{img.shape[0]}, {100 * (img.sum(axis=2) > 0).mean():.1f}% pixels covered")
    time_call("render_preview points (default)", lambda: render_preview(g, 512), n)
    time_call("render_preview footprint max_radius=2", lambda: render_preview(g, 512, max_radius=2), n)
    g.focal_px = 0.0
    time_call("render_preview automatic camera", lambda: render_preview(g, 512), n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
