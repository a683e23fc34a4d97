"""The Ray executor: does the predictor actor stay busy, and do two GPUs give twice the rate?

A synthetic predictor sleeps 50 ms per image (as a GPU would be busy) and returns a small planar
splat (``bench_pipeline.FixedTimePredictor``). The same photos go from a folder through the real
fetch, post-process and local-store publish stages:

1. the thread runner (the baseline, same run, same machine);
2. ``--executor ray`` on a local Ray with one logical GPU: the actor's busy fraction between its
   first and last image (target >= 0.90);
3. the same with two logical GPUs (two actors): images per second over the prediction window
   (first image started to last image finished, so Ray's start-up is not counted) against (2)
   (target >= 1.8x).

    python benchmarks/bench_ray.py [--images 400] [--predict-ms 50] [--predict-rows N] [--in-flight N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import bench_pipeline
from bench_pipeline import FixedTimePredictor, make_photos
from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.ray_executor import RayExecutor, RayOptions
from sharp_dataset_pipeline.pipeline.runner import Runner, RunOptions, RunSummary
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.sources.folder import FolderSource
from sharp_dataset_pipeline.splat.formats import FormatOptions
from sharp_dataset_pipeline.stores.local import LocalStore

STORE_BYTES = 1 << 30


def run_once(root: Path, photos: Path, predict_s: float, executor: RayExecutor | None,
             batch_size: int) -> tuple[RunSummary, float]:
    store = LocalStore(root / f"store-{time.monotonic_ns()}")
    store.open()
    opts = RunOptions.of(client_id="bench", run_dir=root / f"run-{time.monotonic_ns()}", subdir="folder",
                         formats=FormatOptions(formats=("ply",)))
    predictor = FixedTimePredictor(predict_s, 0.0, batch_size=batch_size)
    runner = Runner(FolderSource(photos, range_size=100_000), store, predictor, opts, Metrics(),
                    StopControl(root / "control"), executor=executor)
    started = time.perf_counter()
    try:
        summary = runner.run()
    finally:
        store.close()
    return summary, time.perf_counter() - started


def ray_run(root: Path, photos: Path, predict_s: float, gpus: int, batch_size: int,
            ray_opts: RayOptions) -> tuple[RunSummary, float]:
    """One run on a fresh local Ray with ``gpus`` logical GPUs (all actors warm before the clock)."""
    import ray
    from ray.data import DataContext

    ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=gpus, object_store_memory=STORE_BYTES,
             include_dashboard=False, logging_level="WARNING")
    # The synthetic predictor lives in a script the workers cannot import: send it by value.
    ray.cloudpickle.register_pickle_by_value(bench_pipeline)
    DataContext.get_current().wait_for_min_actors_s = 120
    try:
        executor = RayExecutor(ray_opts)
        return run_once(root, photos, predict_s, executor, batch_size)
    finally:
        ray.shutdown()


def window_rate(summary: RunSummary) -> tuple[float, float]:
    """Images per second between the first prediction's start and the last one's end, and that window."""
    actors = summary.extra["ray"]["actors"].values()
    images = sum(a["images"] for a in actors)
    starts = [a["first"] for a in actors]
    ends = [a["last"] for a in actors]
    window = max(ends) - min(starts)
    return (images / window if window > 0 else 0.0), window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--predict-ms", type=float, default=50.0)
    parser.add_argument("--batch-size", type=int, default=1, help="predictor batch size")
    parser.add_argument("--stage-batch", type=int, default=8, help="fetch and post-process batch size (rows per task)")
    parser.add_argument("--predict-rows", type=int, default=None,
                        help="photos per predictor actor call (RayOptions.predict_rows; default: the executor's)")
    parser.add_argument("--in-flight", type=int, default=None,
                        help="items inside Ray at once (RayOptions.max_in_flight; default: the executor's)")
    parser.add_argument("--quick", action="store_true", help="80 images")
    args = parser.parse_args(argv)
    n, predict_s = (80 if args.quick else args.images), args.predict_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = root / "photos"
        make_photos(photos, n)
        threads, t_wall = run_once(root, photos, predict_s, None, args.batch_size)
        ray_opts = RayOptions(fetch_batch=args.stage_batch, post_batch=args.stage_batch, actor_cpus=0.25,
                              predict_rows=args.predict_rows, max_in_flight=args.in_flight)
        one, one_wall = ray_run(root, photos, predict_s, 1, args.batch_size, ray_opts)
        two, two_wall = ray_run(root, photos, predict_s, 2, args.batch_size, ray_opts)
    actors = two.extra["ray"]["actors"]
    t0 = min(a["first"] for a in actors.values())
    for name, a in actors.items():
        print(f"  2-GPU run, actor {name}: {a['images']} images, busy {a['busy_fraction']:.3f} of "
              f"{a['window_s']:.2f} s, from +{a['first'] - t0:.2f} s")
    rate1, win1 = window_rate(one)
    rate2, win2 = window_rate(two)
    print(f"images: {n}, synthetic predictor {args.predict_ms:.0f} ms/image, batch {args.batch_size}, "
          f"fetch/post batch {args.stage_batch}, {os.cpu_count()} CPUs; photos per actor call "
          f"{one.extra['ray']['predict_rows']}, items inside Ray at most {one.extra['ray']['max_in_flight']} "
          f"(1 GPU) / {two.extra['ray']['max_in_flight']} (2 GPUs)")
    print(f"thread runner:    published {threads.published}, wall {t_wall:.2f} s, "
          f"predictor busy fraction {threads.predictor_busy_fraction:.4f}")
    print(f"ray, 1 GPU actor: published {one.published}, wall {one_wall:.2f} s (incl. Ray start), "
          f"actor busy fraction {one.predictor_busy_fraction:.4f}  (target >= 0.90)")
    print(f"ray, 2 GPU actors: published {two.published}, wall {two_wall:.2f} s, "
          f"busy fraction {two.predictor_busy_fraction:.4f}")
    print(f"rate over the prediction window: 1 GPU {rate1:.2f} img/s ({win1:.2f} s), "
          f"2 GPUs {rate2:.2f} img/s ({win2:.2f} s): {rate2 / rate1:.2f}x  (target >= 1.8x)")
    ok = one.predictor_busy_fraction >= 0.90 and rate2 >= 1.8 * rate1
    ok = ok and threads.published == one.published == two.published == n
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
