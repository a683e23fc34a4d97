"""Pipeline overhead: is the predictor kept busy?

A synthetic predictor sleeps a fixed time per image (as a GPU would be busy) and returns a small
planar splat. 300 photos go from a folder through the real fetch, post-process and local-store
publish stages. The figure of merit is the predictor's busy fraction between its first and last
image (target >= 0.97), printed with the ratio against an ideal run that only sleeps.

Optional ``--postprocess-ms`` adds a fixed CPU cost per item in post-processing (up to half the
predictor's time must not lower the busy fraction). ``--sharp-size`` makes every splat a full
SHARP-size scene (1,179,648 Gaussians, a 66 MB PLY) that goes through the default formats
(PLY write + validation + preview), as a GPU run at ~1 s per image would.

    python benchmarks/bench_pipeline.py [--quick] [--predict-ms 50] [--postprocess-ms 25]
    python benchmarks/bench_pipeline.py --sharp-size --images 40 --predict-ms 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.runner import Runner, RunOptions
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.predict.base import RawSplat
from sharp_dataset_pipeline.predict.planar import lift_to_plane
from sharp_dataset_pipeline.records import Failure, FetchedImage
from sharp_dataset_pipeline.sources.folder import FolderSource
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.stores.local import LocalStore


class _CpuCostSplat:
    """A prediction whose post-processing burns ``cost_s`` of CPU (numpy work, like unprojection)."""

    def __init__(self, gaussians: Gaussians, cost_s: float) -> None:
        self.gaussians, self.cost_s = gaussians, cost_s

    def to_gaussians(self) -> Gaussians:
        end = time.perf_counter() + self.cost_s
        block = np.ones((256, 256), dtype=np.float32)
        while time.perf_counter() < end:
            block = np.sqrt(block * 1.0001)
        return self.gaussians


class FixedTimePredictor:
    """Sleeps ``per_image_s`` per image: the GPU's time, during which the CPU is free."""

    name = "synthetic"
    model_version = "fixed-time"

    def __init__(self, per_image_s: float, postprocess_s: float, batch_size: int = 1,
                 scene: Gaussians | None = None) -> None:
        self.per_image_s, self.postprocess_s, self.batch_size = per_image_s, postprocess_s, batch_size
        self.scene = scene

    def predict(self, images: Sequence[FetchedImage]) -> list[RawSplat | Failure]:
        time.sleep(self.per_image_s * len(images))
        return [
            _CpuCostSplat(self.scene if self.scene is not None else
                          lift_to_plane(i.rgb, i.focal_px, i.width, i.height, 32), self.postprocess_s)
            for i in images
        ]


def sharp_size_scene() -> Gaussians:
    """A 1,179,648-Gaussian scene shaped like SHARP's output (two layers of a 768×768 grid)."""
    rgb = np.random.default_rng(1).integers(0, 255, (768, 768, 3), dtype=np.uint8)
    layer = lift_to_plane(rgb, 1000.0, 1536, 1536, 768)
    far = layer.vertices.copy()
    far[:, 0:3] *= 1.5
    return Gaussians(np.concatenate([layer.vertices, far]), focal_px=1000.0, width=1536, height=1536)

    def close(self) -> None:
        return None


def make_photos(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.Resampling.BILINEAR).save(folder / f"{i:04d}.jpg")


def run_once(root: Path, n: int, predict_s: float, postprocess_s: float,
             sharp_size: bool = False) -> tuple[float, float, int]:
    photos = root / "photos"
    if not photos.exists():
        make_photos(photos, n)
    store_dir = root / f"store-{time.monotonic_ns()}"
    store = LocalStore(store_dir)
    store.open()
    metrics = Metrics()
    opts = RunOptions.of(client_id="bench", run_dir=root / f"run-{time.monotonic_ns()}", subdir="folder")
    predictor = FixedTimePredictor(predict_s, postprocess_s, scene=sharp_size_scene() if sharp_size else None)
    control = StopControl(root / "control")
    runner = Runner(FolderSource(photos, range_size=300), store, predictor, opts, metrics, control)
    started = time.perf_counter()
    summary = runner.run()
    wall = time.perf_counter() - started
    store.close()
    return summary.predictor_busy_fraction, wall, summary.published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 images instead of 300")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--predict-ms", type=float, default=50.0)
    parser.add_argument("--postprocess-ms", type=float, default=0.0)
    parser.add_argument("--sharp-size", action="store_true",
                        help="full 1,179,648-Gaussian splats through the default formats (ply + preview)")
    args = parser.parse_args(argv)
    n = 100 if args.quick else args.images
    with tempfile.TemporaryDirectory() as tmp:
        fraction, wall, published = run_once(Path(tmp), n, args.predict_ms / 1000, args.postprocess_ms / 1000,
                                             args.sharp_size)
    ideal = n * args.predict_ms / 1000
    size = "SHARP-size splats (1,179,648 Gaussians), formats ply + preview" if args.sharp_size else "small splats"
    print(f"images: {n}, predictor {args.predict_ms:.0f} ms/image, "
          f"extra post-process {args.postprocess_ms:.0f} ms/image, {size}")
    print(f"published: {published}; wall {wall:.2f} s; ideal (predictor only) {ideal:.2f} s")
    print(f"predictor busy fraction (first to last image): {fraction:.4f}  (target >= 0.97)")
    print(f"whole run vs predictor-only: {wall / ideal:.3f}x the ideal wall time (includes start-up and drain)")
    return 0 if fraction >= 0.97 and published == n else 1


if __name__ == "__main__":
    sys.exit(main())
